"""The weights flags every CLI shares, as one argument group: ``--weights official|ZIP|PATH`` (default:
the project's trained model), ``--weights-url``, ``--weights-md5``, ``--preset`` and ``--random-weights``.

``reference.infer``, ``export.build``, ``runtime.scan`` (through ``runtime.args.ModelArgs``) and the
benchmarks add them with ``WeightsArgs().add_to(parser)`` and turn them into ``ResolvedWeights`` with
``parse`` (``reference.weights.resolve_weights`` does the work). It imports no torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .config import PRESETS
from .errors import TruForError, UsageError
from .weights import OFFICIAL, ResolvedWeights, WeightsSource, resolve_weights

FLAGS = ("--weights", "--weights-url", "--weights-md5", "--preset", "--random-weights")


class WeightsArgs:
    """Adds the weights flags to a parser (or group) and parses them into ``ResolvedWeights``."""

    def add_to(self, parser, note: Callable[[str], str] = lambda flag: "") -> None:
        """``note(flag)`` is appended to each flag's help (say, which backends read it)."""

        def flag(name: str, text: str, **kwargs) -> None:
            parser.add_argument(name, help=text + note(name), **kwargs)

        flag("--weights", f"{OFFICIAL}: the authors' TruFor weights (downloaded once, MD5-checked, cached under "
             "$TRUFOR_HOME; GRIP-UNINA non-commercial licence); ZIP: their TruFor_weights.zip; PATH: a checkpoint "
             "file (default: the project's own trained model, reference/default_model)", metavar="official|ZIP|PATH")
        flag("--weights-url", f"a mirror of TruFor_weights.zip for --weights {OFFICIAL} (default: $TRUFOR_WEIGHTS_URL, "
             "else the authors' address)", metavar="URL")
        flag("--weights-md5", f"the MD5 the archive of --weights {OFFICIAL} or ZIP must have (default: "
             "$TRUFOR_WEIGHTS_MD5, else the authors' published one)", metavar="MD5")
        flag("--preset", "the architecture (default: the one the weights file records, else trufor); with "
             "--random-weights, the model to initialise", choices=sorted(PRESETS))
        flag("--random-weights", "untrained weights of --preset, to test the pipeline only: the outputs mean nothing",
             action="store_true")

    @staticmethod
    def given(args: argparse.Namespace) -> list[str]:
        """The weights flags given on the command line."""
        return [name for name in FLAGS if getattr(args, name[2:].replace("-", "_")) not in (None, False)]

    @staticmethod
    def argv(args: argparse.Namespace) -> list[str]:
        """The weights flags as given, for a child process that parses them again."""
        argv = []
        for name in FLAGS:
            value = getattr(args, name[2:].replace("-", "_"))
            argv += [name] if value is True else [] if value in (None, False) else [name, str(value)]
        return argv

    @staticmethod
    def check(args: argparse.Namespace) -> None:
        """Refuse flags that cannot go together (UsageError); reads no file."""
        weights = args.weights
        if args.random_weights and weights is not None:
            raise UsageError(f"--random-weights and --weights {weights} both choose the weights; pick one")
        if args.weights_url is not None and weights != OFFICIAL:
            raise UsageError(f"--weights-url is where --weights {OFFICIAL} downloads from, but "
                             + (f"--weights {weights} was given" if weights else "--weights was not given"))
        if args.weights_md5 is not None and weights != OFFICIAL and not str(weights).lower().endswith(".zip"):
            raise UsageError(f"--weights-md5 checks the archive of --weights {OFFICIAL} or --weights ZIP, but "
                             + (f"--weights {weights} was given" if weights else "--weights was not given"))

    def parse(self, args: argparse.Namespace, *, defer_default: bool = False) -> ResolvedWeights | None:
        """The weights the flags choose (downloading the authors' if need be). ``defer_default``: None when
        no flag chose any (the caller resolves the default model only if it runs a model itself).
        Raises UsageError for flags that cannot go together, CheckpointError for weights that cannot be had."""
        self.check(args)
        if defer_default and args.weights is None and not args.random_weights:
            return None
        source = WeightsSource.from_environment(args.weights_url, args.weights_md5)
        return resolve_weights(args.weights, args.preset, args.random_weights, source)

    def parse_or_exit(self, args: argparse.Namespace, parser: argparse.ArgumentParser, **kwargs) -> ResolvedWeights | None:
        """``parse``, for CLIs: a usage error prints the usage, any other error its message; both exit 2."""
        try:
            return self.parse(args, **kwargs)
        except UsageError as error:
            parser.error(str(error))
        except TruForError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
