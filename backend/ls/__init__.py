"""Label Studio access.

Map:
- `client`: a small Label Studio REST client over requests (token auth, refresh, retries).
- `frames`: task images: LS downloads with auth, a disk cache, a FrameReader over a video's tasks.
- `importers`: the `import-video` / `import-posetrack` commands.
"""
