"""``pykinml-export``: a checkpoint or run directory → one self-contained TorchScript model file.

    pykinml-export runs/my_run -o model.pt                  # the run's best checkpoint, float32
    pykinml-export runs/my_run/checkpoints/last.ckpt -o model.pt --dtype float64

The file loads with plain torch (``torch.jit.load``), without pykinml; ``pykinml-predict`` and
``load_model`` take it like a checkpoint. Bad input (no such model, not a pykinml checkpoint, an output
directory that does not exist or cannot be written) is one line on stderr and exit code 2, and no file.
"""

from __future__ import annotations

import argparse
import sys

from pykinml.cli.errors import report_errors

PROGRAM = "pykinml-export"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Export a trained pykinml model as one TorchScript file that plain torch loads and runs.",
        epilog="Load it with torch.jit.load(path, _extra_files={'pykinml.json': ''}); see README.md.",
    )
    parser.add_argument("model", help="a checkpoint (.ckpt), a run directory (its best checkpoint) or an exported model")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.pt", help="the file to write")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="precision of the exported model (default: float32)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def run() -> int:
        from pykinml.export import export_model

        path = export_model(args.model, args.output, args.dtype)
        size = path.stat().st_size
        print(f"{path}: exported ({args.dtype}, {size / 1e6:.2f} MB)")
        return 0

    return report_errors(PROGRAM, run)


if __name__ == "__main__":
    sys.exit(main())
