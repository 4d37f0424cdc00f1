"""`fastcontrast` console script (also `python -m fastcontrast`): `fastcontrast experiment ...`,
`fastcontrast bench ...`, `fastcontrast --version`."""
from __future__ import annotations

import sys

COMMANDS = {
    "experiment": ("fastcontrast.experiment", "reproduce the two-stage MNIST / Fashion-MNIST study with every loss"),
    "bench": ("fastcontrast.bench", "time and memory-profile fastcontrast against its baselines"),
}


def usage() -> str:
    lines = ["usage: fastcontrast COMMAND [options]", "       fastcontrast --version", "",
             "commands:"]
    lines += [f"  {name:<12}{help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`fastcontrast COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__
        print(f"fastcontrast {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fastcontrast: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    import importlib

    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
