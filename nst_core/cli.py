"""`python -m nst_core`: stylize, run-job, plan, calibrate, presets, styles, describe, info, weights.

torch loads only inside the commands that compute (stylize, run-job, info): `--help`,
`presets`, `describe` and `weights` stay fast, and the installer calls them before torch exists.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .batch import DEFAULT_TEMPORAL_WEIGHT
from .batch import FORMATS as BATCH_FORMATS
from .cluster import DEFAULT_FRAMES_PER_TASK, DEFAULT_OVERLAP
from .errors import Cancelled, ExitCode, NstError, UsageError, describe_error
from .events import Sink, download_bar, error_event, make_sink
from .option_flags import add_option_flags, option_values, options_from_args
from .options import (
    DEVICES,
    MODELS,
    SNAPSHOT_EVERY,
    SNAPSHOT_EVERY_LIMITS,
    check_range,
    describe,
)
from .paintings import paintings_table, style_path
from .presets import presets_table
from .wire import Limits


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one `error:` line (exit code 2), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# -- running a command with one-line errors --------------------------------------------------------


def run_reported(sink: Sink, action: Callable[[], object]) -> int:
    """Run `action`; any failure becomes one error line or event and its exit code."""
    try:
        action()
        return int(ExitCode.OK)
    except BrokenPipeError:
        raise  # no one reads our output any more: not an error to report (see main)
    except (Exception, KeyboardInterrupt) as exc:  # every failure ends as one line
        error = describe_error(exc)
        if os.environ.get("NST_DEBUG") == "1":
            traceback.print_exc()
        sink.emit(error_event(error))
        return int(error.code)


# -- stylize and run-job ---------------------------------------------------------------------------


def _watched_sink(args: argparse.Namespace) -> tuple[Sink, Any]:
    """The sink `--progress` asks for (a bar on a terminal) and a cancel token that SIGTERM sets, and
    with --watch-stdin the end of a piped stdin or the parent's death: stdin is a shell loop's own
    (`ls | while read f; do ... stylize "$f" ...`) unless a program that runs us says it is our lifeline."""
    from .cancel import CancelWatcher, stdin_is_pipe

    mode = args.progress or ("bar" if sys.stderr.isatty() else "none")
    sink = make_sink(mode)
    watcher = CancelWatcher(on_abort=_abort_reporter(sink))
    keep = getattr(args, "keep_on_stop", False)
    watcher.start(args.watch_stdin and stdin_is_pipe(), watch_parent=args.watch_stdin, keep_on_stop=keep)
    return sink, watcher


def cmd_stylize(args: argparse.Namespace) -> int:
    sink, watcher = _watched_sink(args)

    def action() -> None:
        from .job import JobRequest, check_not_an_input, dry_run, execute
        from .output import Output

        if args.server and (args.snapshot or args.keep_on_stop):
            raise UsageError("--snapshot and --keep-on-stop watch a run on this machine: leave out --server.")
        styles = tuple(style_path(s) for s in args.styles)
        masks = None if args.style_masks is None else tuple(Path(m) for m in args.style_masks)
        options, output = options_from_args(args), Output(Path(args.output))
        snapshot = None if args.snapshot is None else Output(Path(args.snapshot))
        request = JobRequest(
            Path(args.content), styles, options, output, "working", masks, snapshot, args.snapshot_every
        )
        if not args.overwrite:
            check_not_an_input(request)
        if args.dry_run:
            _print_plan(dry_run(request), args.json, indent=2)
        elif not args.server or not _stylized_on_server(args, request, sink, watcher):
            execute(request, sink, watcher, watcher.stop)

    code = run_reported(sink, action)
    watcher.finish()
    return code


def _stylized_on_server(args: argparse.Namespace, request: Any, sink: Sink, cancel: Any) -> bool:
    """Run the job on the first free `--server`; False when none answers (the caller runs it here)."""
    from .client import stylize_on_server

    return stylize_on_server(args.server, args.token_file, request, option_values(args), sink, cancel)


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until stopped; one line (JSON) on stdout once it listens, errors as one line on stderr."""
    import asyncio

    def action() -> None:
        from . import client, service, weights

        token = client.read_token(Path(args.token_file), create=True)
        path = weights.resolve_weights(args.weights, args.model)
        devices = service.worker_devices(args.device)
        limits = Limits(
            max_request_bytes=int(args.max_request_mb * 1024 * 1024),
            max_pixels=int(args.max_pixels),
            upload_timeout=args.upload_timeout,
        )
        service.note_if_exposed(args.host)

        def ready(state: dict[str, Any]) -> None:
            print(json.dumps({"event": "listening", **state}), flush=True)

        asyncio.run(
            service.serve(
                token,
                path,
                devices,
                host=args.host,
                port=args.port,
                limits=limits,
                idle_timeout=args.idle_timeout,
                state_file=Path(args.state_file) if args.state_file else None,
                ready=ready,
                model=args.model,
            )
        )

    return run_reported(Sink(), action)


def cmd_batch(args: argparse.Namespace) -> int:
    sink, watcher = _watched_sink(args)
    failed: list = []

    def action() -> None:
        from . import batch

        sources, missing = batch.collect([Path(p) for p in args.inputs])
        items = batch.plan_items(sources, Path(args.output), args.format, args.overwrite)
        if not items and not missing:
            raise UsageError("No pictures in the inputs given: name image files or folders that hold some.")
        batch.make_folder(Path(args.output))
        weight = None
        if args.frames:
            weight = DEFAULT_TEMPORAL_WEIGHT if args.temporal_weight is None else args.temporal_weight
        styles = [style_path(s) for s in args.style]
        options = options_from_args(args)
        if args.ray is None:
            summary = batch.run_batch(items, styles, options, sink, watcher, missing, weight)
        else:
            summary = _batch_on_ray(args, items, styles, options, sink, watcher, missing, weight)
        failed.extend(summary.failed)

    code = run_reported(sink, action)
    watcher.finish()
    return int(failed[0][1].code) if code == 0 and failed else code


def _batch_on_ray(args: argparse.Namespace, *batch: Any) -> Any:
    """`run_batch(items, styles, options, sink, cancel, missing, weight)`, each unit a Ray task."""
    from .ray_executor import run_on_ray

    runs = {"per_task": args.frames_per_task, "overlap": args.overlap}
    return run_on_ray(*batch, address=args.ray, cpus=args.ray_cpus, **runs)


def cmd_run_job(args: argparse.Namespace) -> int:
    from .cancel import CancelWatcher, stdin_is_pipe
    from .job import execute, read_job

    sink = make_sink("json")
    watcher = CancelWatcher(on_abort=_abort_reporter(sink)).start(watch_stdin=stdin_is_pipe())
    code = run_reported(sink, lambda: execute(read_job(args.job), sink, watcher, watcher.stop))
    watcher.finish()
    return code


def _abort_reporter(sink: Sink) -> Callable[[], None]:
    return lambda: sink.emit(error_event(Cancelled()), timeout=1.0)


def cmd_plan(args: argparse.Namespace) -> int:
    """The plan for a content of --width x --height, in words or as JSON (what a front end shows before
    it runs)."""

    def action() -> None:
        from .plan import make_plan

        if args.width < 1 or args.height < 1:
            raise UsageError(f"--width and --height must be at least 1, not {args.width}x{args.height}.")
        plan = make_plan(options_from_args(args), (args.width, args.height), args.styles, masked=args.masked)
        _print_plan(plan, args.json)

    return run_reported(Sink(), action)


def _print_plan(plan: Any, as_json: bool, indent: int | None = None) -> None:
    """A plan in words, or as JSON (docs/protocol.md) for programs such as the plug-ins."""
    from .plan import describe_plan, plan_data

    print(json.dumps(plan_data(plan), indent=indent) if as_json else describe_plan(plan))


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure this device's speed and record it: the plans' time estimates and automatic sizes use it."""

    def announce(device: str) -> None:
        if not args.json:
            print(f"Measuring the speed of {device} (up to a minute or two) ...", file=sys.stderr, flush=True)

    def action() -> None:
        from .speed import calibrate_and_record, calibration_text

        result = calibrate_and_record(args.device, args.weights, announce, args.model)
        print(json.dumps(result) if args.json else calibration_text(result))

    return run_reported(Sink(), action)


# -- presets, describe, info -----------------------------------------------------------------------


def cmd_presets(args: argparse.Namespace) -> int:
    print(json.dumps(describe()["presets"], indent=2) if args.json else presets_table())
    return 0


def cmd_styles(args: argparse.Namespace) -> int:
    print(paintings_table())
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    print(json.dumps(describe(), indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    sink = Sink()

    def action() -> None:
        from .devices import device_info, info_text

        info = {"version": __version__, **device_info(args.device), "weights": _weights_status()}
        print(json.dumps(info, indent=2) if args.json else info_text(info))

    return run_reported(sink, action)


def _weights_status() -> dict[str, dict[str, Any]]:
    from .network import load_features
    from .weights import OFFICIAL, status

    return {model: status(model, load_features) for model in OFFICIAL}


# -- weights ---------------------------------------------------------------------------------------


def cmd_weights(args: argparse.Namespace) -> int:
    from . import weights

    def action() -> None:
        if args.action == "fetch":
            path = weights.fetch(args.model, args.dir, download_bar() if sys.stderr.isatty() else None)
            if weights.verified_features(path) is None:
                _make_features_file(path)
            print(path)
        elif args.action == "check" and args.path.is_file() and weights.official_for_file(args.path) is None:
            # No hash to compare for a file of the user's own: loading it is the check.
            from .network import load_features

            load_features(args.model or "vgg19", args.path)
            print(f"ok: {args.path} loads as {args.model or 'vgg19'} weights")
        elif args.action == "check":
            digest = weights.check(args.path, args.model)
            print(f"ok: {args.path} sha256 {digest}")
        else:
            print(weights.find_weights(args.model))

    return run_reported(Sink(), action)


def _make_features_file(official: Path) -> None:
    """The features-only copy the engine starts from; without it the engine reads the whole file, so
    a failure is a note, not an error."""
    try:
        from .network import ensure_features_copy
    except ImportError as exc:  # the weights are fetched before torch exists, and work without it
        print(f"note: no features-only copy of {official.name} made ({exc}).", file=sys.stderr)
        return
    try:
        ensure_features_copy(official)
    except NstError as error:
        print(f"note: {error.message}", file=sys.stderr)


SERVICE_PORT = 8642  # the default port of `serve`; no well-known service uses it

# -- the parser ------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m nst_core", description="Neural style transfer (Gatys et al.) on VGG features."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for add in (
        _add_stylize_parser,
        _add_serve_parser,
        _add_batch_parser,
        _add_plan_parser,
        _add_calibrate_parser,
        _add_small_parsers,
        _add_weights_parser,
    ):
        add(commands)
    return parser


def _add_stylize_parser(commands: argparse._SubParsersAction) -> None:
    stylize = commands.add_parser("stylize", help="repaint an image in the style of others")
    stylize.add_argument("content", metavar="CONTENT", help="the image to repaint")
    stylize.add_argument(
        "styles",
        metavar="STYLE",
        nargs="+",
        help="one or more style images or bundled paintings' names (see `styles`)",
    )
    stylize.add_argument("-o", "--output", required=True, metavar="OUT", help="result file (.png, .jpg, ...)")
    stylize.add_argument(
        "--style-masks",
        nargs="+",
        metavar="MASK",
        help="one grayscale image per style, white = that style, black = not (docs/regions.md)",
    )
    _add_progress_flag(stylize, "bar (default on a terminal), JSON lines on stdout, or none")
    stylize.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (scales, tiles, memory, time); write nothing",
    )
    stylize.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON, for programs")
    stylize.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="run on an engine service (repeat for several: the first free one); needs --token-file; "
        "when none answers, runs here (with --weights, if given: a server uses its own)",
    )
    stylize.add_argument("--token-file", metavar="FILE", help="the file holding the servers' token")
    stylize.add_argument("--snapshot", metavar="PATH", help="keep PATH rewritten with the picture so far")
    stylize.add_argument(
        "--snapshot-every",
        type=float,
        default=SNAPSHOT_EVERY,
        metavar="SECONDS",
        help="(default %(default)s)",
    )
    stylize.add_argument(
        "--keep-on-stop",
        action="store_true",
        help="the first Ctrl-C ends the iteration under way and writes the picture so far; a second cancels",
    )
    _add_run_flags(stylize, "the result", cmd_stylize)


def _add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="a long-lived engine for the plug-ins and --server clients")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)"
    )
    serve.add_argument(
        "--port", type=int, default=SERVICE_PORT, help=f"default {SERVICE_PORT}; 0: any free port"
    )
    serve.add_argument(
        "--token-file", required=True, metavar="FILE", help="the token clients must send (made if missing)"
    )
    _add_weights_flag(serve)
    serve.add_argument(
        "--model",
        default="vgg19",
        choices=MODELS,
        help="the network the weights are for (install.py --model)",
    )
    _add_device_flag(serve, "default auto: every CUDA GPU, else one")
    serve.add_argument(
        "--idle-timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="exit after S seconds without a job; 0: never",
    )
    serve.add_argument("--state-file", metavar="FILE", help="write the address and pid here while serving")
    _add_limit_flags(serve, Limits())
    serve.set_defaults(handler=cmd_serve)


def _add_limit_flags(serve: argparse.ArgumentParser, limits: Limits) -> None:
    """What one request may carry; the defaults are wire.Limits'."""
    serve.add_argument(
        "--max-request-mb",
        type=float,
        default=limits.max_request_bytes / 2**20,
        metavar="MB",
        help="largest request",
    )
    serve.add_argument(
        "--max-pixels", type=int, default=limits.max_pixels, metavar="N", help="largest image, in pixels"
    )
    serve.add_argument(
        "--upload-timeout",
        type=float,
        default=limits.upload_timeout,
        metavar="S",
        help="refuse an upload that sends nothing for S seconds",
    )


def _add_batch_parser(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser("batch", help="repaint many pictures with one engine; a rerun resumes")
    batch.add_argument("inputs", metavar="INPUT", nargs="+", help="image files, or folders of them")
    batch.add_argument(
        "--style",
        action="append",
        required=True,
        metavar="STYLE",
        help="a style image or bundled painting's name (repeat for several)",
    )
    batch.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the results")
    batch.add_argument(
        "--format", default="png", choices=BATCH_FORMATS, help="results' format (png; same: the input's)"
    )
    _add_progress_flag(batch, "as for stylize")
    batch.add_argument(
        "--frames",
        action="store_true",
        help="the inputs are consecutive frames, in order: each starts from the one before, warped by the "
        "optical flow, so the strokes follow the motion instead of flickering",
    )
    batch.add_argument(
        "--temporal-weight",
        type=float,
        metavar="W",
        help="with --frames: how strongly a frame keeps the previous one's strokes "
        f"(default {DEFAULT_TEMPORAL_WEIGHT:g})",
    )
    _add_ray_flags(batch)
    _add_run_flags(batch, "a result", cmd_batch)


def _add_ray_flags(batch: argparse.ArgumentParser) -> None:
    batch.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on a Ray cluster: its head's HOST:PORT, or auto (the one running on this machine, else "
        "one started for this batch); one engine per GPU worker, needs the [cluster] extra",
    )
    batch.add_argument(
        "--frames-per-task",
        type=int,
        default=DEFAULT_FRAMES_PER_TASK,
        metavar="N",
        help=f"with --ray --frames: consecutive frames one task paints (default {DEFAULT_FRAMES_PER_TASK})",
    )
    batch.add_argument(
        "--overlap",
        type=int,
        default=DEFAULT_OVERLAP,
        metavar="N",
        help="with --ray --frames: frames two runs share, faded from one into the next "
        f"(default {DEFAULT_OVERLAP})",
    )
    batch.add_argument(
        "--ray-cpus", type=int, metavar="N", help="with --ray, no GPUs: CPUs per task (default: a machine's)"
    )


def _add_plan_parser(commands: argparse._SubParsersAction) -> None:
    plan = commands.add_parser("plan", help="the plan for a content of a given size: scales, memory, time")
    plan.add_argument("--width", type=int, required=True, metavar="W")
    plan.add_argument("--height", type=int, required=True, metavar="H")
    plan.add_argument("--styles", type=int, default=1, metavar="N", help="how many style images (default 1)")
    plan.add_argument("--masked", action="store_true", help="the styles come with --style-masks")
    plan.add_argument("--json", action="store_true", help="the plan as JSON (for programs: docs/protocol.md)")
    add_option_flags(plan)
    plan.set_defaults(handler=cmd_plan)


def _add_calibrate_parser(commands: argparse._SubParsersAction) -> None:
    calibrate = commands.add_parser("calibrate", help="measure this device's speed for the time estimates")
    _add_device_flag(calibrate)
    _add_weights_flag(calibrate)
    calibrate.add_argument("--model", default="vgg19", choices=MODELS, help="the network the weights are for")
    calibrate.add_argument("--json", action="store_true", help="the measurement as JSON (for programs)")
    calibrate.set_defaults(handler=cmd_calibrate)


def _add_small_parsers(commands: argparse._SubParsersAction) -> None:
    """run-job, presets, describe and info: a flag or two each."""
    run_job = commands.add_parser("run-job", help="run a job file (docs/protocol.md); JSON lines on stdout")
    run_job.add_argument("job", metavar="JOB.json")
    run_job.set_defaults(handler=cmd_run_job)

    presets = commands.add_parser("presets", help="list the presets")
    presets.add_argument("--json", action="store_true")
    presets.set_defaults(handler=cmd_presets)

    styles = commands.add_parser("styles", help="list the bundled paintings a style may be named by")
    styles.set_defaults(handler=cmd_styles)

    describe_cmd = commands.add_parser("describe", help="presets, defaults and ranges as JSON (front ends)")
    describe_cmd.add_argument("--json", action="store_true", help="the only format; accepted for clarity")
    describe_cmd.set_defaults(handler=cmd_describe)

    info = commands.add_parser("info", help="device, memory, torch and weights")
    info.add_argument("--json", action="store_true")
    _add_device_flag(info)
    info.set_defaults(handler=cmd_info)


def _add_progress_flag(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument("--progress", choices=("bar", "json", "none"), help=text)


def _add_device_flag(parser: argparse.ArgumentParser, text: str | None = None) -> None:
    parser.add_argument("--device", default="auto", choices=DEVICES, help=text)


def _add_weights_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", metavar="FILE", help="VGG19 weights file (default: the installed one)")


def _add_run_flags(parser: argparse.ArgumentParser, result: str, handler: Callable[..., int]) -> None:
    """What stylize and batch share after their own flags: --overwrite, --watch-stdin, the style options."""
    parser.add_argument("--overwrite", action="store_true", help=f"let {result} replace an input image")
    parser.add_argument(
        "--watch-stdin",
        action="store_true",
        help="cancel (exit 130) when stdin, a pipe, reaches its end or the parent process dies: for a "
        "program that runs this one and keeps that pipe open as its lifeline (the plug-ins do)",
    )
    add_option_flags(parser)
    parser.set_defaults(handler=handler)


def _add_weights_parser(commands: argparse._SubParsersAction) -> None:
    weights = commands.add_parser("weights", help="download, check or locate the VGG weights")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=Parser)
    fetch = actions.add_parser("fetch", help="download the official weights (resumes; verifies SHA-256)")
    fetch.add_argument("--model", default="vgg19", choices=MODELS)
    fetch.add_argument("--dir", type=Path, help="folder to put them in (default: the data folder)")
    check = actions.add_parser(
        "check", help="verify a weights file: the official SHA-256, or that a file of your own loads"
    )
    check.add_argument("path", metavar="PATH", type=Path)
    check.add_argument("--model", choices=MODELS, help="default: the model its file name says, else vgg19")
    where = actions.add_parser("path", help="print the weights file the engine would use")
    where.add_argument("--model", default="vgg19", choices=MODELS)
    weights.set_defaults(handler=cmd_weights)


# The commands' numbers beyond the style options (options.LIMITS has those): (min, max) by flag.
FLAG_LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    "serve": {
        "port": (0, 65535),
        "idle_timeout": (0, 1e9),
        "upload_timeout": (1, 1e6),
        "max_request_mb": (1, 1e6),
        "max_pixels": (1, 10**12),
    },
    "batch": {
        "temporal_weight": (0, 1e12),
        "frames_per_task": (1, 100000),
        "overlap": (0, 100000),
        "ray_cpus": (1, 4096),
    },
    "plan": {"styles": (1, 1000)},  # its --width and --height have their own check
    "stylize": {"snapshot_every": SNAPSHOT_EVERY_LIMITS},
}


def check_flags(args: argparse.Namespace) -> None:
    """The command's numbers finite and within FLAG_LIMITS, before it starts."""
    for name, limits in FLAG_LIMITS.get(args.command, {}).items():
        check_range(name, getattr(args, name), limits)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        check_flags(args)
    except UsageError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return int(error.code)
    try:
        return int(args.handler(args))
    except BrokenPipeError:
        return _reader_gone()


def _reader_gone() -> int:
    """The reader of our output stopped reading (`| head -1`): end quietly, as Unix tools do."""
    with contextlib.suppress(OSError, ValueError):
        # What is still buffered goes nowhere, so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return int(ExitCode.BROKEN_PIPE)
