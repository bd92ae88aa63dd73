"""Reading raw input files (plain or gzip) as numbered lines, with errors that name the file and the line.

Gzip is recognised by its magic bytes, whatever the file name. Decompression runs in a reader thread ahead of
the parser, and a truncated gzip still yields every complete line before the cut, so the error can say where the
data stops.
"""
from __future__ import annotations

import gzip
import queue
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

from datasets.raw_errors import DataFormatError


def is_gzip(path: Path) -> bool:
    """gzip is recognised by its magic bytes, whatever the file name."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def open_binary(path: Path) -> BinaryIO:
    """Open plain or gzip (by magic bytes) for binary reading."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb", buffering=1 << 20)


def _inflate(f: BinaryIO, size: int) -> Iterator[bytes]:
    """Decompressed blocks of a gzip stream (several members allowed). Unlike GzipFile.read, a truncated stream
    first yields everything before the cut, so the error can name the line where the data stops."""
    d = zlib.decompressobj(wbits=31)
    while chunk := f.read(size):
        while chunk:
            if d.eof:  # a new gzip member starts (or zero padding after the last one)
                if not chunk.strip(b"\0"):
                    break
                d = zlib.decompressobj(wbits=31)
            out = d.decompress(chunk)
            chunk = d.unused_data if d.eof else b""
            if out:
                yield out
    if not d.eof:
        raise EOFError("the compressed data ends before the end-of-stream marker")


def read_blocks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    """Decompressed blocks of `path`, read ahead by a thread: zlib releases the GIL while inflating, so with a free
    core decompression (~4 s for the Electronics reviews) overlaps with parsing."""
    blocks: queue.Queue = queue.Queue(maxsize=8)
    stop = threading.Event()
    gz = is_gzip(path)

    def read() -> None:
        try:
            with open(path, "rb") as f:
                for block in (_inflate(f, size) if gz else iter(lambda: f.read(size), b"")):
                    if stop.is_set():
                        return
                    blocks.put(block)
            blocks.put(b"")
        except BaseException as e:  # handed to the consumer, which raises it with the line number
            blocks.put(e)

    worker = threading.Thread(target=read, name=f"read {path.name}", daemon=True)
    worker.start()
    try:
        while True:
            block = blocks.get()
            if isinstance(block, BaseException):
                raise block
            if not block:
                return
            yield block
    finally:
        stop.set()
        while worker.is_alive():  # unblock a reader waiting on a full queue, then let it end
            try:
                blocks.get_nowait()
            except queue.Empty:
                worker.join(0.01)


def iter_lines(path: Path, expected: str) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line without its newline) for non-blank lines; a truncated/corrupt gzip or an
    empty file raises DataFormatError. `expected` describes one line of the format, for the messages."""
    lineno = 0
    n_lines = 0
    carry = b""
    try:
        for block in read_blocks(path):
            lines = (carry + block).split(b"\n") if carry else block.split(b"\n")
            carry = lines.pop()  # the unfinished last line, completed by the next block
            for line in lines:
                lineno += 1
                if len(line) <= 1 and not line.strip():
                    continue
                n_lines += 1
                yield lineno, line
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataFormatError(
            f"{path}, line {lineno + 1}: the gzip stream is truncated or corrupt ({e}); expected a complete gzip "
            f"file of lines like {expected}. The file was probably cut off while downloading or copying: "
            f"get it again") from e
    if carry.strip():
        n_lines += 1
        yield lineno + 1, carry
    if n_lines == 0:
        raise DataFormatError(f"{path}, line 1: the file is empty; expected lines like {expected}")


def snippet(line: bytes | str, n: int = 120) -> str:
    """The line as a short quoted string for an error message (decoded leniently, cut after `n` characters)."""
    text = line.decode("utf-8", "replace") if isinstance(line, bytes) else line
    text = text.rstrip("\r\n")
    return repr(text if len(text) <= n else text[:n] + "...")


def parse_nonnegative_int(field: bytes, path: Path, lineno: int, line: bytes, name: str, expected: str) -> int:
    """The non-negative integer in `field` (spaces around it allowed), or DataFormatError naming the line."""
    field = field.strip()
    if not field.isdigit():
        raise DataFormatError(f"{path}, line {lineno}: {name} {snippet(field)} is not a non-negative integer; "
                              f"expected {expected}; the line is {snippet(line)}")
    return int(field)
