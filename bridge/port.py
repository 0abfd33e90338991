"""`python -m bridge.port`: convert a weights file between the torch and Keras twins.

The conversion itself is pure numpy (`bridge.core.porting`); this command builds the
target framework's model, loads the moved weights and saves them in its own format::

    python -m bridge.port --arch vgg16 --from torch --weights in.pth --out out.weights.h5
    python -m bridge.port --arch vgg16 --from keras --weights in.weights.h5 --out out.safetensors
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from bridge.core.spec import FRAMEWORKS, get_arch
from bridge.core.weights import check_state_dict, head_size, read_state_dict, write_state_dict

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Convert a weights file between the frameworks (see module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m bridge.port",
        description="Port weights between the torch and Keras twins of an architecture.",
    )
    parser.add_argument(
        "--arch", required=True, help="vgg16, resnet50, vit_b16 or a *_tiny variant"
    )
    parser.add_argument(
        "--from",
        dest="origin",
        required=True,
        choices=FRAMEWORKS,
        help="framework of --weights",
    )
    parser.add_argument(
        "--weights", required=True, help="input: .pth/.safetensors (torch) or .weights.h5 (keras)"
    )
    parser.add_argument(
        "--out", required=True, help="output: .weights.h5 (keras) or .safetensors/.pth (torch)"
    )
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="head size (default: read from the input file, else the arch's default)",
    )
    args = parser.parse_args(argv)
    spec = get_arch(args.arch)

    import tf_models

    if args.origin == "torch":
        if not args.out.endswith(".weights.h5"):
            raise ValueError(f"{args.out}: a Keras output must end with .weights.h5")
        state = read_state_dict(args.weights)
        k = args.num_classes or head_size(state, spec)
        state = check_state_dict(state, spec, k, source=args.weights)
        model = tf_models.create_model(spec, k, weights=state)
        tf_models.save_weights(model, args.out)
    else:
        if not args.weights.endswith(".weights.h5"):
            raise ValueError(f"{args.weights}: Keras weights must end with .weights.h5")
        _, tagged = tf_models.keras_file_info(args.weights)
        k = args.num_classes or tagged
        model = tf_models.create_model(spec, k, weights=args.weights)
        state = tf_models.torch_state_dict(model)
        if args.out.endswith(".safetensors"):
            write_state_dict(state, args.out)  # numpy only: a Keras-only install can do this
        else:  # torch's own pickle
            try:
                import torch_models
            except ImportError:
                raise ValueError(
                    f"{args.out}: writing .pth needs torch (pip install dermsim[torch]); "
                    "or write .safetensors"
                ) from None
            torch_model = torch_models.create_model(spec, head_size(state, spec), weights=state)
            torch_models.save_weights(torch_model, args.out)
    log.info(
        "wrote %s (%s, %d classes, from %s)",
        args.out,
        spec.name,
        model.spec.resolve_num_classes(k),
        args.origin,
    )
    return 0


if __name__ == "__main__":
    from bridge.core.cli import run

    run(main)
