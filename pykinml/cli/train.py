"""``pykinml-train``: compose the Hydra config (``key=value`` overrides, groups like ``fidelity=multi``) and train.

    pykinml-train                                   # single fidelity on the bundled demo database
    pykinml-train fidelity=multi trainer.max_epochs=50
    pykinml-train --config-dir my_conf data=my_db   # groups and presets of your own
    pykinml-train --cfg fidelity=delta              # print the resolved config and exit

Bad input (unknown key or level, empty selection, incompatible checkpoint, ...) is one line on stderr and
exit code 2, before anything is written. SIGTERM stops training at the end of a step (every process of a
multi-process run at the same step), says what to resume from, and exits with 143.
"""

from __future__ import annotations

import argparse
import os
import sys

from pykinml.cli.errors import report_errors


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pykinml-train",
        description="Train an ANI-style potential (single, delta or chained multi-fidelity) from a pykinml database.",
        epilog="Config groups: data aev model fidelity optim scheduler trainer logger experiment; see conf/ and README.md.",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides: key=value, group=option, +key=value")
    parser.add_argument("--config-dir", "-cd", help="a directory of your own config groups/presets, searched first")
    parser.add_argument("--config-name", "-cn", default="train", help="the primary config (default: train)")
    parser.add_argument("--cfg", action="store_true", help="print the resolved config and exit without training")
    return parser.parse_intermixed_args(argv)  # options may stand between overrides


def _say(line: str) -> None:
    """One line on stderr in one write: the processes of a run share stderr, and print's separate write of the
    newline let two processes' lines run together."""
    sys.stderr.flush()
    os.write(sys.stderr.fileno(), f"{line}\n".encode())


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    def run() -> int:
        from omegaconf import OmegaConf

        from pykinml.config import compose_config

        config = compose_config(args.overrides, args.config_dir, args.config_name)
        if args.cfg:
            print(OmegaConf.to_yaml(config, resolve=True), end="")
            return 0
        from pykinml.distributed import leave_process_group, lost_peer
        from pykinml.errors import TrainingTerminated
        from pykinml.train import quiet_lightning, train

        quiet_lightning()
        try:
            train(config)
            leave_process_group()
        except (RuntimeError, OSError) as exc:  # under DDP: another process died; say so in one line, not a hang
            reason = lost_peer(exc)
            if reason is None:
                raise
            _say(f"pykinml-train: error: {reason}")
            return 1
        except TrainingTerminated as stopped:
            _say(f"pykinml-train: {stopped}")
            return TrainingTerminated.EXIT_CODE
        return 0

    return report_errors("pykinml-train", run)


if __name__ == "__main__":
    sys.exit(main())
