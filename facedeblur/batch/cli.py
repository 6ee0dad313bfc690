"""``facedeblur restore-batch SRC... OUT``: the command-line face of :func:`facedeblur.batch.restore_many`.

:func:`add_parser` registers the command on the ``facedeblur`` parser (argparse only: nothing heavy is imported
until the command runs); :func:`main` runs it on its own (``python -m facedeblur.batch.cli``). The command prints
one summary line to stderr and exits 0 when every item is done, 1 when some failed (or the job could not
start: a one-line ``facedeblur: error: ...``), 2 for usage errors, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import Any, Sequence

__all__ = ["add_parser", "cmd_restore_batch", "main"]

_DTYPES = ("float32", "float16", "bfloat16")
_EXTS = ("png", "tif", "tiff", "jpg", "jpeg", "webp", "bmp")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, as the ``facedeblur`` command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"facedeblur: error: {message} (see '{self.prog} --help')\n")


def _number(low: float, high: float | None, what: str, integer: bool = False):
    """argparse type: a number in [low, high] (nan rejected)."""

    def parse(text: str) -> float | int:
        try:
            v: float | int = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}; {what}") \
                from None
        if not (v >= low and (high is None or v <= high)):  # also rejects nan
            raise argparse.ArgumentTypeError(f"{text} is out of range; {what}")
        return v

    return parse


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``restore-batch`` to the sub-command action ``sub``; ``common`` is the parent parser with ``--debug``."""
    p = sub.add_parser(
        "restore-batch", parents=[common], help="restore a whole archive, resumably (local or on a Ray cluster)",
        description="Restore every image and video of SRC (folders, searched recursively; globs; list files .txt/"
                    ".lst/.list with one path per line; image or video files) into OUT, mirroring each source's tree. "
                    "A manifest in OUT (facedeblur-manifest.sqlite) records every item; rerunning the same command "
                    "skips the items already done with the same input and model, and redoes the rest. Bad items "
                    "are recorded and the job goes on (exit code 1, list in OUT/facedeblur-failures.tsv). Outputs "
                    "are written atomically. See docs/batch.md.")
    p.add_argument("paths", nargs="+", metavar="SRC... OUT", help="sources, then the output folder")
    p.add_argument("--model", default="cfmd-gan", metavar="NAME",
                   help="zoo name, hf-hub:ORG/REPO@REV or local-dir:PATH (default cfmd-gan)")
    p.add_argument("--u", type=_number(0.0, 1.0, "u is a float in [0, 1]: 0 = start of exposure, 1 = end"),
                   metavar="U", help="moment in [0, 1] (continuous models; default: card)")
    p.add_argument("--faces", choices=("auto", "on", "off"), default="auto",
                   help="face pipeline: auto (default, as 'facedeblur restore': photos that are not face-crop sized "
                        "go through detection, alignment and paste-back; videos for face-crop models), on (every "
                        "input is a photo), off (whole images / frames)")
    p.add_argument("--no-face", choices=("fail", "keep"), default="fail",
                   help="an image (or video) in which no face is found: fail (default: a failed item) or keep "
                        "(written unchanged)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda[:N], mps")
    p.add_argument("--dtype", choices=_DTYPES, default=None, help="inference dtype (default float32)")
    p.add_argument("--weights", metavar="PATH", help="weights file or folder (default: embedded / Hub)")
    p.add_argument("--cache-dir", metavar="DIR", help="download cache")
    p.add_argument("--batch-size", type=_number(1, None, "the batch size is an integer >= 1", True), default=None,
                   help="faces (whole images, video frames) per forward pass; a model step restores the faces of at "
                        "least 8 images together (default: 8 on a GPU, 1 on the CPU, where larger batches are slower "
                        "per face)")
    p.add_argument("--ext", default="png", choices=_EXTS, help="output format of images (default png, lossless)")
    p.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    p.add_argument("--blend", type=_number(0.0, 1.0, "blend is in [0, 1]: 0 = input unchanged, 1 = full"),
                   default=1.0, metavar="B", help="0 = input unchanged ... 1 = full restoration (default 1)")
    p.add_argument("--color-match", action="store_true", help="match each restored face's colours to its input")
    p.add_argument("--smoothing", type=_number(0, 30, "the radius is an integer in [0, 30]", True), default=3,
                   metavar="R", help="videos: landmark smoothing radius in frames (default 3; 0 = off)")
    p.add_argument("--codec", default=None, metavar="FOURCC", help="videos: FourCC of the outputs (default: by container)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in OUT that the manifest does not know (default: refuse before any work)")
    p.add_argument("--rehash", action="store_true",
                   help="hash every input again (default: an input with its recorded size and mtime is unchanged)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (default: reader/writer threads around one model) or ray (Ray Data model actors; "
                        "needs the extra facedeblur[ray])")
    p.add_argument("--io-workers", type=_number(1, None, "an integer >= 1", True), default=None, metavar="N",
                   help="local engine: reader and writer threads each (default: CPUs, 2-8)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="ray engine: cluster address (auto, HOST:PORT, ray://HOST:10001; default: RAY_ADDRESS, else "
                        "a local cluster is started for the job)")
    p.add_argument("--actors", type=_number(1, None, "an integer >= 1", True), default=None, metavar="N",
                   help="ray engine: model actors (default: cluster GPUs / --gpus-per-actor, else CPUs / "
                        "--cpus-per-actor)")
    p.add_argument("--cpus-per-actor", type=_number(0.0, None, "a number >= 0"), default=1.0, metavar="C",
                   help="ray engine: CPUs per actor (default 1; also its torch threads)")
    p.add_argument("--gpus-per-actor", type=_number(0.0, None, "a number >= 0"), default=0.0, metavar="G",
                   help="ray engine: GPUs per actor (default 0; > 0 runs the actors on cuda; 0.5 puts two on a GPU)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_restore_batch)


def cmd_restore_batch(args: argparse.Namespace) -> int:
    """Run the job; print one summary line; 0 if every item is done, 1 if some failed."""
    from ..errors import InputError
    from .job import restore_many

    if len(args.paths) < 2:
        raise InputError("restore-batch needs at least one source and the output folder: facedeblur restore-batch "
                         "SRC... OUT")
    *sources, out = args.paths
    faces = {"auto": None, "on": True, "off": False}[args.faces]

    def stop(signum: int, frame: Any) -> None:  # SIGTERM (e.g. a cluster scheduler) stops like Ctrl-C
        raise KeyboardInterrupt

    try:
        old: Any = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM alone
        old = None
    try:
        result = restore_many(sources, out, args.model, u=args.u, faces=faces, device=args.device, dtype=args.dtype,
                              weights=args.weights, cache_dir=args.cache_dir, batch_size=args.batch_size,
                              ext=args.ext, only_center_face=args.only_center_face, blend=args.blend,
                              color_match=args.color_match, smoothing=args.smoothing, codec=args.codec,
                              no_face=args.no_face, overwrite=args.overwrite, rehash=args.rehash, engine=args.engine,
                              io_workers=args.io_workers, ray_address=args.ray_address, actors=args.actors,
                              cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                              progress=not args.quiet)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    print(result.summary(), file=sys.stderr)
    return result.exit_code


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone ``facedeblur`` parser with only ``restore-batch`` (for :func:`main` and the tests)."""
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    parser = _Parser(prog="facedeblur", description="Face motion deblurring model zoo.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``facedeblur restore-batch ...`` on its own: ``main(["restore-batch", SRC, OUT, ...])``. Exit status as
    the ``facedeblur`` command (0 ok, 1 failures or errors, 2 usage, 130 interrupted)."""
    from ..errors import run_command

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, debug=bool(getattr(args, "debug", False)),
                       interrupted="interrupted (rerun the same command to resume)")


if __name__ == "__main__":
    sys.exit(main())
