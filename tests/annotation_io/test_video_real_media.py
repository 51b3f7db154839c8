"""annotation_io.video on footage as phones and file managers leave it: rotation metadata, EXIF, stray files."""

from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import PIL.Image
import PIL.PngImagePlugin
import pytest

from annotation_io.video import MAX_FRAME_PIXELS, VideoError, open_video

W, H = 160, 96


def make_frame(index: int) -> np.ndarray:
    """A frame whose top-left corner is red and whose stripe position encodes `index`."""
    frame = np.full((H, W, 3), 60, np.uint8)
    frame[:24, :24] = (0, 0, 255)
    frame[40:80, 40 + 8 * index : 48 + 8 * index] = 255
    return frame


def write_folder(path: Path, n: int, suffix: str = ".jpg") -> Path:
    path.mkdir()
    for i in range(n):
        cv2.imwrite(str(path / f"{i:06d}{suffix}"), make_frame(i))
    return path


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit black PNG of width x height: a few KB on disk, width * height * 3 bytes decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    pixels = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def test_a_huge_declared_frame_is_refused_from_its_header(tmp_path: Path) -> None:
    """Before: the folder opened (only frame 0 is decoded on open) and reading frame 1 decoded
    12000 x 12000 x 3 bytes (a 30000 x 30000 one took 6 GB of memory) before failing on its size."""
    folder = write_folder(tmp_path / "frames", 2, ".png")
    side = int(MAX_FRAME_PIXELS**0.5) + 1000
    png_declaring(folder / "000001.png", side, side)
    assert (folder / "000001.png").stat().st_size < 100_000
    with pytest.raises(VideoError, match=rf"000001\.png: frame 1 of folder .* declares {side}x{side} pixels"):
        open_video(folder)
    png_declaring(folder / "000001.png", 30000, 30000)  # beyond Pillow's own cap as well
    with pytest.raises(VideoError, match=r"000001\.png: frame 1 .*more pixels than a frame may have"):
        open_video(folder)


def test_a_frame_of_another_size_or_a_non_image_fails_the_open(tmp_path: Path) -> None:
    """Before: both opened fine and failed only when the run reached that frame, losing the work done."""
    folder = write_folder(tmp_path / "sizes", 4)
    cv2.imwrite(str(folder / "000003.jpg"), cv2.resize(make_frame(3), (W * 2, H * 2)))
    with pytest.raises(
        VideoError, match=rf"000003\.jpg: frame 3 is {2 * W}x{2 * H} but the first frame of .* is {W}x{H}"
    ):
        open_video(folder)
    folder = write_folder(tmp_path / "text", 4)
    (folder / "000002.jpg").write_text("not a jpeg")
    with pytest.raises(VideoError, match=r"000002\.jpg: cannot decode image \(frame 2 of folder"):
        open_video(folder)


def test_hidden_files_are_not_frames_and_other_files_are_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: macOS's "._000000.jpg" beside each frame became a frame that does not decode."""
    folder = write_folder(tmp_path / "frames", 3)
    (folder / "._000000.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(100))
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("shot on a phone")
    with caplog.at_level(logging.WARNING, logger="annotation_io.video"), open_video(folder) as source:
        assert source.num_frames == 3
        assert [p.name for p in source.files] == ["000000.jpg", "000001.jpg", "000002.jpg"]
        for index, frame in source.iter_frames():
            assert frame.shape == (H, W, 3) and frame[60, 44 + 8 * index, 0] > 200
    assert "notes.txt" in caplog.text and "._000000" not in caplog.text


def test_webp_and_tiff_frames_keep_their_place(tmp_path: Path) -> None:
    """Before: .webp and .tif files (which cv2 reads) were skipped silently, shifting the indices after them."""
    folder = write_folder(tmp_path / "frames", 2)
    cv2.imwrite(str(folder / "000002.webp"), make_frame(2), [cv2.IMWRITE_WEBP_QUALITY, 101])
    cv2.imwrite(str(folder / "000003.tif"), make_frame(3))
    cv2.imwrite(str(folder / "000004.jpg"), make_frame(4))
    with open_video(folder) as source:
        assert source.num_frames == 5
        for index, frame in source.iter_frames():
            assert frame[60, 44 + 8 * index, 0] > 200, index


def test_exif_oriented_frames_read_as_shown(tmp_path: Path) -> None:
    """JPEGs stored sideways with an EXIF orientation read upright, as browsers show them."""
    folder = tmp_path / "frames"
    folder.mkdir()
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    for i in range(2):
        upright = PIL.Image.fromarray(make_frame(i)[:, :, ::-1])
        stored = upright.transpose(PIL.Image.Transpose.ROTATE_90)  # counter-clockwise
        stored.save(folder / f"{i:06d}.jpg", quality=95, exif=exif.tobytes())
    with open_video(folder) as source:
        assert (source.width, source.height) == (W, H)
        frame = source.read(1)
        assert frame.shape == (H, W, 3)
        assert frame[5, 5, 2] > 200 and frame[5, 5, 0] < 60, "the red corner is top-left again"


def test_one_image_file_reads_as_a_one_frame_video_as_shown(tmp_path: Path) -> None:
    """An image file given where a video may be is read as a folder's frames are. Before: FFmpeg read it
    as a video, ignoring its EXIF orientation (a phone photo came out sideways: 96x160, keypoints in a frame
    Label Studio never shows), decoding a truncated JPEG with grey rows, and calling a text file named
    .jpg an "empty video: no frame decodes (declared frame count 1)"."""
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    upright = PIL.Image.fromarray(make_frame(3)[:, :, ::-1])
    stored = upright.transpose(PIL.Image.Transpose.ROTATE_90)  # counter-clockwise
    stored.save(tmp_path / "photo.jpg", quality=95, exif=exif.tobytes())
    with open_video(tmp_path / "photo.jpg") as source:
        assert (source.num_frames, source.width, source.height, source.fps) == (1, W, H, None)
        frames = list(source.iter_frames())
        assert [i for i, _ in frames] == [0] and np.array_equal(frames[0][1], source.read(0))
        frame = source.read(0)
        assert frame[5, 5, 2] > 200 and frame[5, 5, 0] < 60, "the red corner is top-left again"
        assert frame[60, 44 + 8 * 3, 0] > 200, "the stripe is where it was drawn"
        with pytest.raises(VideoError, match="out of range"):
            source.read(1)
    noise = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)  # large enough to cut
    cut = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(cut[: len(cut) // 2])
    with pytest.raises(VideoError, match=r"cut\.jpg: truncated JPEG \(frame 0 of the image cut\.jpg\)"):
        open_video(tmp_path / "cut.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(VideoError, match=r"notes\.jpg: cannot decode image .*; corrupt or not an image"):
        open_video(tmp_path / "notes.jpg")
    png_declaring(tmp_path / "huge.png", 11_000, 11_000)
    with pytest.raises(VideoError, match=r"huge\.png: frame 0 of the image huge\.png declares 11000x11000"):
        open_video(tmp_path / "huge.png")


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_png_and_tiff_frames_with_an_exif_orientation_read_as_shown(tmp_path: Path, suffix: str) -> None:
    """cv2 applies the EXIF orientation of PNGs and TIFFs too. Before: the header check sized a PNG as
    stored, so a folder mixing upright and EXIF-rotated frames of one shown size was refused ("frame 1 is
    96x160 but the first frame ... is 160x96"); cv2.imread fails on a TIFF with an orientation, so such a
    frame was called "corrupt or not an image"."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, orientation in enumerate((1, 6, 8, 1)):
        upright = PIL.Image.fromarray(make_frame(index)[:, :, ::-1])
        exif = PIL.Image.Exif()
        exif[0x0112] = orientation
        stored = {1: upright, 6: upright.transpose(PIL.Image.Transpose.ROTATE_90),
                  8: upright.transpose(PIL.Image.Transpose.ROTATE_270)}[orientation]  # fmt: skip
        stored.save(folder / f"{index:06d}{suffix}", exif=exif.tobytes())
    with open_video(folder) as source:
        assert (source.width, source.height) == (W, H)
        for index, frame in source.iter_frames():
            assert frame.shape == (H, W, 3), index
            assert frame[5, 5, 2] > 200 and frame[5, 5, 0] < 60, f"frame {index}: the red corner is top-left"
            assert frame[60, 44 + 8 * index, 0] > 200, f"frame {index}: its stripe is where it was drawn"


XMP_ORIENTED_6 = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
                  b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description'
                  b' xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
                  b'<?xpacket end="w"?>')  # fmt: skip


def test_orientations_that_browsers_do_not_apply_are_not_applied(tmp_path: Path) -> None:
    """Frames read as Chromium (156, measured; Label Studio's browser) and cv2 show them: an orientation only
    in XMP or in a PNG's "Raw profile type exif" text, and a WebP's EXIF orientation, are not applied, and a
    PNG whose eXIf chunk is no TIFF block reads as stored. Before: the header check took Pillow's getexif(),
    which reads the first two as orientations (this folder of one shown size was refused: "frame 1 is 96x160
    but the first frame ... is 160x96") and raises on the last ("corrupt or not an image")."""
    folder = tmp_path / "frames"
    folder.mkdir()
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    raw = exif.tobytes()
    profile = PIL.PngImagePlugin.PngInfo()  # ImageMagick's way of keeping EXIF in a PNG
    profile.add_text(
        "Raw profile type exif", f"\nexif\n{len(raw) + 6:8d}\n457869660000{raw.hex()}\n", zip=True
    )
    upright = [PIL.Image.fromarray(make_frame(i)[:, :, ::-1]) for i in range(5)]
    upright[0].save(folder / "000000.jpg", quality=95)
    upright[1].save(folder / "000001.jpg", quality=95, xmp=XMP_ORIENTED_6)
    upright[2].save(folder / "000002.png", pnginfo=profile)
    upright[3].save(folder / "000003.png", exif=b"not a TIFF block")
    upright[4].save(folder / "000004.webp", lossless=True, exif=raw)
    with open_video(folder) as source:
        assert (source.num_frames, source.width, source.height) == (5, W, H)
        for index, frame in source.iter_frames():
            assert frame.shape == (H, W, 3), index
            assert frame[5, 5, 2] > 200 and frame[5, 5, 0] < 60, f"frame {index}: the red corner is top-left"
            assert frame[60, 44 + 8 * index, 0] > 200, f"frame {index}: its stripe is where it was drawn"
    for index in range(1, 5):  # each alone, as `predict IMAGE` reads it
        (image,) = sorted(folder.glob(f"{index:06d}.*"))
        with open_video(image) as source:
            assert (source.width, source.height) == (W, H), image.name


def test_an_animated_webp_or_png_is_refused_not_read_as_its_first_frame(tmp_path: Path) -> None:
    """Before: cv2 read the first frame of an animated WebP or PNG (APNG) without a word, so `predict` on one
    answered for one frame of many (and a folder took it as one frame), exit 0."""
    folder = write_folder(tmp_path / "frames", 3, ".webp")
    first, second = (PIL.Image.fromarray(make_frame(i)[:, :, ::-1]) for i in range(2))
    first.save(folder / "000001.webp", save_all=True, append_images=[second], duration=40, lossless=True)
    with pytest.raises(
        VideoError, match=r"000001\.webp: frame 1 of folder .* is an animated WebP of 2 frames"
    ):
        open_video(folder)
    first.save(tmp_path / "clip.png", save_all=True, append_images=[second], duration=40)
    with pytest.raises(
        VideoError, match=r"clip\.png: frame 0 of the image clip\.png is an animated PNG \(APNG\) of 2"
    ):
        open_video(tmp_path / "clip.png")
    first.save(tmp_path / "still.png", save_all=True)  # one frame: no animation chunks
    with open_video(tmp_path / "still.png") as source:
        assert (source.num_frames, source.width, source.height) == (1, W, H)


def rotate_in_container(data: bytes) -> bytes:
    """The mp4 with its video track's display matrix set to a 90-degree rotation (as phones write it)."""
    out = bytearray(data)
    at = out.index(b"tkhd", out.index(b"moov"))
    fields = 4 + 4 + (20 if out[at + 4] == 0 else 32) + 8 + 8  # type, version+flags, times..., layer...
    one = 0x00010000
    struct.pack_into(">9I", out, at + fields, 0, one, 0, (-one) & 0xFFFFFFFF, 0, 0, 0, 0, 0x40000000)
    return bytes(out)


def test_a_phone_video_with_rotation_metadata_reads_upright(tmp_path: Path) -> None:
    """Before: cv2 ignored the container's rotation, so a portrait phone clip was read lying on its side
    (people sideways for the backbone, keypoints in coordinates no player shows)."""
    plain = tmp_path / "plain.mp4"
    writer = cv2.VideoWriter(str(plain), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (W, H))
    for i in range(3):
        writer.write(make_frame(i))
    writer.release()
    rotated = tmp_path / "portrait.mp4"
    rotated.write_bytes(rotate_in_container(plain.read_bytes()))
    with open_video(plain) as source:
        assert (source.width, source.height) == (W, H)
        stored = source.read(2)
    with open_video(rotated) as source:
        assert (source.num_frames, source.width, source.height) == (3, H, W)
        frame = source.read(2)
        assert frame.shape == (W, H, 3)
        np.testing.assert_array_equal(frame, cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE))
        assert [f.shape for _, f in source.iter_frames()] == [(W, H, 3)] * 3


def test_a_long_folder_says_it_is_checking_headers_and_how_long_it_took(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 50,000-frame folder spent 15-40 s on its header check with nothing said; now two log lines."""
    import annotation_io.video as video

    folder = write_folder(tmp_path / "frames", 6)
    with caplog.at_level(logging.INFO, logger="annotation_io.video"):
        open_video(folder).close()
    assert "headers" not in caplog.text  # a short folder says nothing
    monkeypatch.setattr(video, "HEADER_SCAN_ANNOUNCE", 5)
    with caplog.at_level(logging.INFO, logger="annotation_io.video"):
        open_video(folder).close()
    assert f"checking the headers of 6 frames of folder {folder} ..." in caplog.text
    assert f"6 frames of folder {folder} checked in " in caplog.text


def test_a_frame_folder_reads_right_from_several_threads_at_once(tmp_path: Path) -> None:
    """FolderSource says `concurrent_reads`: the prediction's read-ahead decodes its frames on 4 threads."""
    from concurrent.futures import ThreadPoolExecutor

    folder = write_folder(tmp_path / "frames", 12, ".png")
    with open_video(folder) as source:
        assert source.concurrent_reads
        indices = [i % 12 for i in range(240)]
        with ThreadPoolExecutor(4) as pool:
            frames = list(pool.map(source.read, indices))
    for index, frame in zip(indices, frames):
        assert np.array_equal(frame, make_frame(index)), index
