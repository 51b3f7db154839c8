"""Test support, imported by tests and benchmarks only: `simulated` (a ground-truth backbone that errs like real ones), `dcn_reference` (direct-loop DCNv2)."""
