"""The networks, free of I/O: `blocks` (DCNv2, RSB blocks), `hrnet` (HRNet), `dcpose` (PRF, PTM, PCN, DCPose), `losses`."""
