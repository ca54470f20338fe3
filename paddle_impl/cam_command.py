"""The Paddle CAM command line: upstream's ``cam.py`` on the port, for any Paddle image classifier.

Run it as ``python cam.py`` from a checkout, or as ``paddle-gradcam`` once the
project is pip-installed (both call :func:`main`)::

    paddle-gradcam --model resnet50 --weights seeded --image-path both.png --method gradcam --output-dir output/

writes, into the output directory,

* ``{method}_cam.jpg``    – the CAM coloured with JET and blended over the image;
* ``{method}_gb.jpg``     – guided backpropagation;
* ``{method}_cam_gb.jpg`` – guided backpropagation masked by the CAM;
* ``{method}_cam.npy``    – the float32 (H, W) CAM itself, in [0, 1].

Given a folder as ``--image-path``, it writes one such set per image, each in
a sub-directory named after the image.  Models and weights are described in
:mod:`paddle_impl.models`; ``--list-layers`` prints the model's layer paths to
pick ``--target-layers`` from.  Only Paddle is needed: torchvision weights
(``--weights default``, ``imagenet`` or a ``.pth``) are converted by the parity
harness, reached through the ``paddle_gradcam.torch_weights`` entry point (or
handed over by the checkout's ``cam.py``), and without PyTorch the command says
what to install.

Everything the user gives (images, model, weights, target category, device,
output directory) is checked before any CAM is computed, and each file is
written atomically, so a bad option leaves nothing half-written.  Problems are
one line on stderr and exit status 2 (``--debug`` keeps the traceback).  A
normal run writes nothing to stderr: Paddle's own warnings are silenced
unless ``--verbose`` is given.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from paddle_impl import locations
from paddle_impl.errors import UserError, cli_errors
from paddle_impl.layer_paths import parse_layer_paths
from paddle_impl.method_table import METHODS

__all__ = ["PROG", "DEFAULT_IMAGE", "IMAGE_SUFFIXES", "TORCH_WEIGHTS_ENTRY_POINT", "build_parser", "main"]

PROG = "paddle-gradcam"
DEFAULT_IMAGE = locations.default_image()
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TORCH_WEIGHTS_ENTRY_POINT = "paddle_gradcam.torch_weights"
TorchWeights = Callable[[str, str], Path]


def _default_image_help() -> str:
    if locations.is_checkout():
        return "fixtures/both.png in the repository"
    return f"{DEFAULT_IMAGE}: fixtures/both.png under ${locations.HOME_ENV_VAR}, else under ~/.cache/{locations.PROJECT_NAME}"


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The command line's options, with ``prog`` as the name in usage and error lines."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Compute a class activation map for a Paddle image classifier with the PaddlePaddle port of "
            "pytorch-grad-cam 1.5.7, and write {method}_cam.jpg, {method}_gb.jpg, "
            "{method}_cam_gb.jpg and {method}_cam.npy into the output directory."
        ),
    )
    parser.add_argument(
        "--image-path",
        default=None,
        metavar="PATH",
        help="input image (PNG, JPEG, ...; at most 8192 pixels per side), or a folder: one set of outputs per image, "
        f"in a sub-directory named after it (default: {_default_image_help().replace('%', '%%')})",
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
        metavar="MODEL",
        help="a paddle.vision model (resnet50, vgg16, mobilenet_v3_large, densenet121, ...), a PaddleClas model "
        "(ResNet50_vd, ...; when PaddleClas is installed) or package.module:factory, a function returning a "
        "paddle.nn.Layer (default: %(default)s)",
    )
    parser.add_argument(
        "--target-layers",
        default=None,
        metavar="EXPR[,EXPR...]",
        help="target layers as attribute/index paths on the model, e.g. 'layer4[-1],layer4[-2]' (--list-layers "
        "prints them) (default: upstream's convention for paddle.vision models, layer4 for ResNet50; otherwise the "
        "last top-level sub-layer that outputs a feature map; RefineCAM multiplies the maps of several layers, so "
        "give it more than one)",
    )
    parser.add_argument(
        "--weights",
        default="seeded",
        help="weights of --model: 'seeded' (Paddle's init after paddle.seed(0): deterministic, for trying the tool), "
        "'paddle' (paddle.vision's pretrained ImageNet weights, downloaded once), a .pdparams file of the model's "
        "state dict, or torchvision weights converted by the parity harness (needs PyTorch): 'default' "
        "(torchvision's init after torch.manual_seed(0)), 'imagenet' or a .pth file (default: %(default)s)",
    )
    parser.add_argument(
        "--target-category",
        type=int,
        default=None,
        metavar="K",
        help="class index to explain, 0..999 for ImageNet models (default: the highest-scoring class)",
    )
    parser.add_argument(
        "--list-layers",
        action="store_true",
        default=False,
        help="print the model's layer paths (as --target-layers takes them) and their types, and exit",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=False,
        help="show the frameworks' own warnings and log lines, which are silenced otherwise (default: off)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=False,
        help="show full tracebacks instead of one-line errors (default: off)",
    )
    return parser


def _silence_frameworks() -> None:
    """Keep Paddle's warnings off stderr: they are about Paddle, not about anything the user did.

    Paddle's C++ side logs through glog (read from the environment when Paddle
    loads, so this runs before it is imported); its Python side warns through
    ``warnings`` (e.g. that ccache, used to compile C++ extensions, is missing).
    """
    os.environ.setdefault("GLOG_minloglevel", "2")
    warnings.filterwarnings("ignore", module=r"paddle(\.|$)")
    warnings.filterwarnings("ignore", module=r"paddleclas(\.|$)")
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
    import logging

    logging.getLogger("ppcls").setLevel(logging.ERROR)


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


def _image_paths(given: Optional[str]) -> List[Tuple[Path, str]]:
    """``(image, sub-directory)`` for each input: ``""`` for a single image, the image's name for a folder's."""
    if given is None:
        if not DEFAULT_IMAGE.exists() and not locations.is_checkout():
            # An installed command has no `make fixtures` next to it: say where the image is looked for.
            raise UserError(
                f"no --image-path given and the default image {DEFAULT_IMAGE} is missing "
                f"(put upstream's examples/both.png there, set ${locations.HOME_ENV_VAR}, or pass --image-path)"
            )
        return [(DEFAULT_IMAGE, "")]
    path = Path(given)
    if not path.is_dir():
        return [(path, "")]
    images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not images:
        raise UserError(f"--image-path {path} is a folder with no image in it ({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in images]
    # photo.png and photo.jpg would share a sub-directory: such images keep their suffix in its name
    return [(p, p.stem if stems.count(p.stem) == 1 else p.name.replace(".", "_")) for p in images]


def _torch_weights_source(given: Optional[TorchWeights]) -> Optional[TorchWeights]:
    if given is not None:
        return given
    from importlib import metadata

    for entry_point in metadata.entry_points(group=TORCH_WEIGHTS_ENTRY_POINT):
        return entry_point.load()
    return None


def _torch_weights_or_hint(source: Optional[TorchWeights]) -> TorchWeights:
    """``source`` with a missing PyTorch turned into one line that says what to install."""
    hint = locations.install_command("parity")

    def converted(weights: str, model: str) -> Path:
        if source is None:
            raise UserError(f"--weights {weights}: torchvision weights are converted by the parity harness, which is "
                            f"not installed (it needs PyTorch): {hint}")
        try:
            return source(weights, model)
        except ModuleNotFoundError as error:
            missing = (error.name or "").split(".")[0]
            if missing not in ("torch", "torchvision"):
                raise
            raise UserError(f"--weights {weights}: torchvision weights are converted with PyTorch, which is not "
                            f"installed: {hint}") from None

    return converted


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


def _check_target_category(category: Optional[int], model, input_tensor) -> None:
    if category is None:
        return
    from paddle_impl.models import class_count

    count = class_count(model)
    if count is None:  # no Linear head (SqueezeNet's is a convolution): ask the model itself
        import paddle

        with paddle.no_grad():
            count = int(model(input_tensor).shape[-1])
    if not 0 <= category < count:
        raise UserError(f"--target-category must be a class index 0..{count - 1} of this model's {count} classes, "
                        f"got {category}")


def _list_layers(args: argparse.Namespace) -> int:
    from paddle_impl.models import build_model, layer_paths_of

    model = build_model(args.model)
    for path, kind in layer_paths_of(model):
        print(f"{path}  {kind}")
    return 0


def _explain(args: argparse.Namespace, method, loaded, layer_text: str, image_path: Path, rgb_img,
             output_dir: Path) -> List[Path]:
    """One image through upstream's cam.py steps; returns the files written."""
    import cv2
    import numpy as np

    from paddle_impl import GuidedBackpropReLUModel, method_table
    from paddle_impl.atomic import save_npy, write_bytes
    from paddle_impl.layer_paths import resolve_layers
    from paddle_impl.utils.image import deprocess_image, preprocess_image, show_cam_on_image, show_factorization_on_image
    from paddle_impl.utils.model_targets import ClassifierOutputTarget

    model = loaded.model
    target_layers = resolve_layers(model, layer_text)
    input_tensor = preprocess_image(rgb_img, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    targets = None if args.target_category is None else [ClassifierOutputTarget(args.target_category)]

    # built and called as a user of the library would (the parity harness runs the same recipes)
    with method_table.released(method_table.build_cam(method, model, target_layers)) as cam:
        if hasattr(cam, "batch_size"):
            cam.batch_size = 32  # as upstream's cam.py (ScoreCAM, AblationCAM)
        if hasattr(cam, "inference_engine") and not method.reruns_network_per_channel:
            # One forward per image: exporting a predictor (seconds) would cost more than it saves.
            cam.inference_engine = False
        produced = method_table.call_cam(method, cam, input_tensor, targets, args.aug_smooth, args.eigen_smooth)
    grayscale_cam = method_table.picture_cam(produced["cam"])[0]  # DFF: each pixel's strongest concept
    if method.recipe == "dff":
        explanations = np.array(produced["cam"][0], copy=True)
        cam_image = show_factorization_on_image(
            rgb_img, explanations, colors=method_table.factorization_colors(len(explanations)), image_weight=0.3)
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
            raise UserError(f"OpenCV could not encode {args.method}_{suffix}.jpg for {image_path}")
        encoded[output_dir / f"{args.method}_{suffix}.jpg"] = buffer.tobytes()
    written = []
    for path, data in encoded.items():
        write_bytes(path, data)
        written.append(path)
    npy_path = output_dir / f"{args.method}_cam.npy"
    save_npy(npy_path, np.float32(grayscale_cam))
    written.append(npy_path)
    return written


def main(argv: Optional[List[str]] = None, prog: str = PROG, torch_weights: Optional[TorchWeights] = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), compute the CAMs and write the files; 0 on success.

    ``prog`` names the command in usage and error lines (``cam.py`` for the
    checkout's script, ``paddle-gradcam`` for the console script).
    ``torch_weights(weights, model)`` converts torchvision weights into a
    ``.pdparams`` path; by default it is the ``paddle_gradcam.torch_weights``
    entry point, when one is installed.
    """
    args = build_parser(prog).parse_args(argv)
    if args.verbose:
        warnings.simplefilter("default")
    else:
        _silence_frameworks()
    with cli_errors(prog, debug=args.debug):
        if args.list_layers:
            return _list_layers(args)
        # -- validate everything before computing ---------------------------------
        if args.target_category is not None and args.target_category < 0:
            raise UserError(f"--target-category must be a class index 0 or more, got {args.target_category}")
        method = METHODS[args.method]
        if args.aug_smooth and not method.has_aug_smooth:
            raise UserError(f"--aug_smooth: {args.method} has no test-time augmentation smoothing in upstream's API")
        if args.eigen_smooth and not method.has_eigen_smooth:
            raise UserError(f"--eigen_smooth: {args.method} has no eigen smoothing in upstream's API")
        if args.target_layers is not None:
            parse_layer_paths(args.target_layers)  # a bad expression is refused before anything is computed
        _choose_device(args)

        from paddle_impl.image_io import load_rgb_image

        images = []
        for image_path, subdirectory in _image_paths(args.image_path):
            rgb_img, note = load_rgb_image(image_path)
            if note:
                print(f"{prog}: note: {image_path}: {note}", file=sys.stderr)
            images.append((image_path, subdirectory, rgb_img))

        from paddle_impl.models import load_model
        from paddle_impl.utils.image import preprocess_image

        loaded = load_model(args.model, args.weights, _torch_weights_or_hint(_torch_weights_source(torch_weights)))
        layer_text = args.target_layers or loaded.default_target_layers
        from paddle_impl.layer_paths import resolve_layers

        resolve_layers(loaded.model, layer_text)  # a path the model lacks is refused before anything is written
        _check_target_category(args.target_category, loaded.model,
                               preprocess_image(images[0][2], mean=IMAGENET_MEAN, std=IMAGENET_STD))
        output_root = Path(args.output_dir)
        _prepare_output_dir(output_root)

        # -- compute and write, image by image (upstream's cam.py, step for step) ----
        for image_path, subdirectory, rgb_img in images:
            output_dir = output_root / subdirectory if subdirectory else output_root
            if subdirectory:
                _prepare_output_dir(output_dir)
            for path in _explain(args, method, loaded, layer_text, image_path, rgb_img, output_dir):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
