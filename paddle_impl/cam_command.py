"""The Paddle CAM command line: upstream's ``cam.py`` on the port, for a ResNet50.

Run it as ``python cam.py`` from a checkout, or as ``paddle-gradcam`` once the
project is pip-installed (both call :func:`main`)::

    paddle-gradcam --image-path both.png --method gradcam --output-dir output/

writes, into the output directory,

* ``{method}_cam.jpg``    – the CAM coloured with JET and blended over the image;
* ``{method}_gb.jpg``     – guided backpropagation;
* ``{method}_cam_gb.jpg`` – guided backpropagation masked by the CAM;
* ``{method}_cam.npy``    – the float32 (H, W) CAM itself, in [0, 1].

Everything the user gives (image, weights, target category, device, output
directory) is checked before any computing, and each file is written
atomically, so a bad option leaves nothing half-written.  Problems are one
line on stderr and exit status 2 (``--debug`` keeps the traceback).

The default image and the weights cache come from :mod:`paddle_impl.locations`:
the checkout's ``fixtures/`` when run from one, the per-user data directory
(``$PADDLE_GRADCAM_HOME``, else ``~/.cache/paddle-gradcam-parity``) when
installed.  Reading torchvision ``.pth`` weights the first time needs PyTorch
(the ``[parity]`` extra); once converted, the Paddle copy is reused without it.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import List, Optional

# Paddle warns on import when ccache is missing; it is about compiling C++
# extensions, which this tool never does.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

from paddle_impl import locations  # noqa: E402
from paddle_impl.errors import UserError, cli_errors  # noqa: E402
from paddle_impl.layer_paths import parse_layer_paths  # noqa: E402
from parity.model_zoo import arch, arch_names  # noqa: E402
from parity.registry import METHODS  # noqa: E402

__all__ = ["PROG", "DEFAULT_IMAGE", "build_parser", "main"]

PROG = "paddle-gradcam"
DEFAULT_IMAGE = locations.default_image()
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
NUM_CLASSES = 1000


def _default_image_help() -> str:
    if locations.is_checkout():
        return "fixtures/both.png in the repository"
    return f"{DEFAULT_IMAGE}: fixtures/both.png under ${locations.HOME_ENV_VAR}, else under ~/.cache/{locations.PROJECT_NAME}"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line's options, with ``prog`` as the name in usage and error lines."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Compute a class activation map for a ResNet50 with the PaddlePaddle port of "
            "pytorch-grad-cam 1.5.7, and write {method}_cam.jpg, {method}_gb.jpg, "
            "{method}_cam_gb.jpg and {method}_cam.npy into the output directory."
        ),
    )
    parser.add_argument(
        "--image-path",
        default=None,
        metavar="PATH",
        help="input image (PNG, JPEG, ...; at most 8192 pixels per side) "
        f"(default: {_default_image_help().replace('%', '%%')})",
    )
    parser.add_argument(
        "--method",
        default="gradcam",
        choices=list(METHODS),
        help="CAM method: %(choices)s (default: %(default)s)",
    )
    parser.add_argument(
        "--use-cuda",
        action="store_true",
        default=False,
        help="run on the GPU (same as --device gpu); an error if Paddle has no CUDA or no GPU is visible "
        "(default: off)",
    )
    parser.add_argument(
        "--device",
        choices=["cpu", "gpu"],
        default=None,
        help="device to run on (default: cpu, or gpu with --use-cuda)",
    )
    parser.add_argument(
        "--aug_smooth",
        "--aug-smooth",
        dest="aug_smooth",
        action="store_true",
        default=False,
        help="test-time augmentation smoothing: average the CAM over flips and rescales (default: off)",
    )
    parser.add_argument(
        "--eigen_smooth",
        "--eigen-smooth",
        dest="eigen_smooth",
        action="store_true",
        default=False,
        help="reduce noise by taking the first principal component of cam_weights*activations "
        "(default: off)",
    )
    parser.add_argument(
        "--output-dir",
        default="output/",
        metavar="DIR",
        help="directory the four output files are written into, created if missing (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default="resnet50",
        choices=arch_names(),
        help="architecture from paddle.vision (weights transferred from its torchvision twin) (default: %(default)s)",
    )
    parser.add_argument(
        "--target-layers",
        default=None,
        metavar="EXPR[,EXPR...]",
        help="target layers as attribute/index paths on the Paddle model, e.g. 'layer4[-1],layer4[-2]' "
        "(default: layer4 for ResNet50, the model's conventional last convolutional block otherwise; "
        "RefineCAM multiplies the maps of several layers, so give it more than one)",
    )
    parser.add_argument(
        "--weights",
        default="default",
        help="weights of --model: 'default' (torchvision init with torch.manual_seed(0), made locally), "
        "'imagenet' (torchvision IMAGENET1K_V1, downloaded once) or a path to a torchvision state dict (.pth) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--target-category",
        type=int,
        default=None,
        metavar="K",
        help="ImageNet class index 0..999 to explain (default: the highest-scoring class)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="show full tracebacks instead of one-line errors (default: off)",
    )
    return parser


def _choose_device(args: argparse.Namespace) -> str:
    if args.use_cuda and args.device == "cpu":
        raise UserError("--use-cuda and --device cpu contradict each other; give one of them")
    device = "gpu" if args.use_cuda else (args.device or "cpu")
    import paddle

    if device == "gpu":
        option = "--use-cuda" if args.use_cuda else "--device gpu"
        if not paddle.is_compiled_with_cuda():
            raise UserError(
                f"{option}: CUDA is not available: this PaddlePaddle build has no CUDA support "
                "(install paddlepaddle-gpu, or run on the CPU)"
            )
        if paddle.device.cuda.device_count() < 1:
            raise UserError(f"{option}: CUDA is not available: no GPU is visible to PaddlePaddle")
    paddle.set_device(device)
    return device


def _image_path(given: Optional[str]) -> Path:
    if given is not None:
        return Path(given)
    if not DEFAULT_IMAGE.exists() and not locations.is_checkout():
        # An installed command has no `make fixtures` next to it: say where the image is looked for.
        raise UserError(
            f"no --image-path given and the default image {DEFAULT_IMAGE} is missing "
            f"(put upstream's examples/both.png there, set ${locations.HOME_ENV_VAR}, or pass --image-path)"
        )
    return DEFAULT_IMAGE


def _paddle_weights(spec: str, arch: str) -> Path:
    from parity.weights import ensure_paddle_weights, resolve_weights

    try:
        return ensure_paddle_weights(resolve_weights(spec, arch=arch), arch=arch)
    except ModuleNotFoundError as error:
        # Making or converting torchvision weights needs PyTorch, which only the
        # [parity] extra installs; an already converted copy is reused without it.
        missing = (error.name or "").split(".")[0]
        if missing not in ("torch", "torchvision"):
            raise
        raise UserError(
            f"--weights {spec}: reading torchvision weights needs {missing}, which is not installed "
            "(pip install 'paddle-gradcam-parity[parity]')"
        ) from None


def _prepare_output_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise UserError(f"output dir is not a directory: {path}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"output dir cannot be created: {path} ({error.strerror or error})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".cam-write-test.", suffix=".tmp", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"output dir is not writable: {path} ({error.strerror or error})") from None


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), compute the CAM and write the four files; 0 on success.

    ``prog`` names the command in usage and error lines (``cam.py`` for the
    checkout's script, ``paddle-gradcam`` for the console script).
    """
    args = build_parser(prog).parse_args(argv)
    with cli_errors(prog, debug=args.debug):
        # -- validate everything before computing ---------------------------------
        if args.target_category is not None and not 0 <= args.target_category < NUM_CLASSES:
            raise UserError(
                f"--target-category must be an ImageNet class index 0..{NUM_CLASSES - 1}, got {args.target_category}"
            )
        spec = METHODS[args.method]
        if args.aug_smooth and "aug_smooth" not in spec.smooths:
            raise UserError(f"--aug_smooth: {args.method} has no test-time augmentation smoothing in upstream's API")
        if args.eigen_smooth and "eigen_smooth" not in spec.smooths:
            raise UserError(f"--eigen_smooth: {args.method} has no eigen smoothing in upstream's API")
        layer_text = args.target_layers or ("layer4" if args.model == "resnet50" else arch(args.model).paddle_target_layer)
        parse_layer_paths(layer_text)  # a bad expression is refused before anything is computed
        _choose_device(args)

        from paddle_impl.image_io import load_rgb_image

        image_path = _image_path(args.image_path)
        rgb_img, note = load_rgb_image(image_path)
        if note:
            print(f"{prog}: note: {image_path}: {note}", file=sys.stderr)

        from parity.weights import build_paddle_model, load_paddle_state_dict

        state = load_paddle_state_dict(_paddle_weights(args.weights, args.model))
        output_dir = Path(args.output_dir)
        _prepare_output_dir(output_dir)

        # -- compute (upstream's cam.py, step for step) -----------------------------
        import cv2
        import numpy as np

        import paddle_impl
        from paddle_impl import GuidedBackpropReLUModel
        from paddle_impl.atomic import save_npy, write_bytes
        from paddle_impl.layer_paths import resolve_layers
        from paddle_impl.utils.image import deprocess_image, preprocess_image, show_cam_on_image, show_factorization_on_image
        from parity.recipes import build_cam, call_cam, factorization_colors, picture_cam, released
        from paddle_impl.utils.model_targets import ClassifierOutputTarget

        model = build_paddle_model(args.model, state, "float32")
        target_layers = resolve_layers(model, layer_text)
        input_tensor = preprocess_image(rgb_img, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        targets = None if args.target_category is None else [ClassifierOutputTarget(args.target_category)]

        # built and called as a user of the library would (parity.recipes: the harness does the same)
        with released(build_cam(spec, paddle_impl, "paddle", model, target_layers)) as cam:
            if hasattr(cam, "batch_size"):
                cam.batch_size = 32  # as upstream's cam.py (ScoreCAM, AblationCAM)
            produced = call_cam(spec, cam, input_tensor, targets, args.aug_smooth, args.eigen_smooth)
        grayscale_cam = picture_cam(produced["cam"])[0]  # DFF: each pixel's strongest concept
        if spec.recipe == "dff":
            explanations = np.array(produced["cam"][0], copy=True)
            cam_image = show_factorization_on_image(rgb_img, explanations, colors=factorization_colors(len(explanations)),
                                                    image_weight=0.3)
        else:
            cam_image = show_cam_on_image(rgb_img, grayscale_cam, use_rgb=True)
        cam_image = cv2.cvtColor(cam_image, cv2.COLOR_RGB2BGR)

        gb_model = GuidedBackpropReLUModel(model=model)
        gb = gb_model(input_tensor, target_category=args.target_category)
        cam_mask = cv2.merge([grayscale_cam, grayscale_cam, grayscale_cam])
        cam_gb = deprocess_image(cam_mask * gb)
        gb = deprocess_image(gb)

        # -- write (each file atomically) ---------------------------------------------
        encoded = {}
        for suffix, image in (("cam", cam_image), ("gb", gb), ("cam_gb", cam_gb)):
            ok, buffer = cv2.imencode(".jpg", image)
            if not ok:
                raise UserError(f"OpenCV could not encode {args.method}_{suffix}.jpg")
            encoded[output_dir / f"{args.method}_{suffix}.jpg"] = buffer.tobytes()
        written = []
        for path, data in encoded.items():
            write_bytes(path, data)
            written.append(path)
        npy_path = output_dir / f"{args.method}_cam.npy"
        save_npy(npy_path, np.float32(grayscale_cam))
        written.append(npy_path)
        for path in written:
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
