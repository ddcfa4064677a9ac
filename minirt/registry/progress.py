"""Progress of a pull or push, one line (or bar) per layer, as ``docker pull`` shows it.

``Bars`` draws them with tqdm: text bars in a terminal, ipywidgets bars in
Jupyter (``tqdm.auto`` picks). ``Quiet`` shows nothing (``-q``). The daemon
gives its own ``Progress`` that turns the same calls into docker's JSON
progress messages. Every method may be called from a download thread.
"""

import sys


class Progress:
    """Shows nothing; the base of every way of showing progress."""

    def layer(self, digest: str, total: int, action: str) -> "LayerProgress":
        """A layer (or config) starts moving: ``action`` is Downloading, Pushing, ..."""
        return LayerProgress()

    def done(self, digest: str, status: str) -> None:
        """A layer needs no transfer, or is finished: Already exists, Mounted from ..."""

    def message(self, text: str) -> None:
        """A line about the whole image: Pulling from ..., Digest: ..., Status: ..."""


class LayerProgress:
    def update(self, nbytes: int) -> None:
        pass

    def close(self, status: str) -> None:
        pass


Quiet = Progress


class Lines(Progress):
    """Plain lines, for logs and pipes: no bars, one line per layer when it is done."""

    def __init__(self, out=None):
        self.out = out or sys.stderr

    def done(self, digest: str, status: str) -> None:
        print(f"{short(digest)}: {status}", file=self.out, flush=True)

    def message(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def layer(self, digest, total, action):
        return _LineLayer(self, digest)


class _LineLayer(LayerProgress):
    def __init__(self, lines: Lines, digest: str):
        self.lines, self.digest = lines, digest

    def close(self, status: str) -> None:
        self.lines.done(self.digest, status)


class Bars(Lines):
    """A tqdm bar per layer (a widget in Jupyter); plain lines when tqdm is missing."""

    def __init__(self, out=None):
        super().__init__(out)
        self.position = 0

    def layer(self, digest, total, action):
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return super().layer(digest, total, action)
        self.position += 1
        bar = tqdm(total=total, desc=f"{short(digest)} {action}", unit="B", unit_scale=True,
                   unit_divisor=1024, position=self.position - 1, leave=True, file=self.out,
                   dynamic_ncols=True)
        return _BarLayer(bar, digest)


class _BarLayer(LayerProgress):
    def __init__(self, bar, digest: str):
        self.bar, self.digest = bar, digest

    def update(self, nbytes: int) -> None:
        self.bar.update(nbytes)

    def close(self, status: str) -> None:
        self.bar.set_description(f"{short(self.digest)} {status}", refresh=False)
        self.bar.close()


def short(digest: str) -> str:
    """The 12 hex digits docker shows for a layer."""
    return digest.removeprefix("sha256:")[:12]


def for_terminal(quiet: bool, out=None) -> Progress:
    """What the CLI shows: nothing with -q, bars on a terminal, lines otherwise."""
    out = out or sys.stderr
    if quiet:
        return Quiet()
    return Bars(out) if out.isatty() else Lines(out)
