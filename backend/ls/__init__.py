"""Label Studio access.

Map:
- `client`: a small Label Studio REST client over requests (token auth, refresh, retries).
- `frames`: task images: LS downloads with auth, an LRU disk cache, a FrameReader over a video's tasks.
- `media`: which image URLs may be read (LS media, MEDIA_HOSTS, MEDIA_ROOTS) and capped downloads.
- `importers`: the `import-video` / `import-posetrack` commands.
"""
