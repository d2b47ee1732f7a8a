"""Check a ``chalice package`` output offline: the zip Lambda will run, and the Terraform beside it.

Lambda unpacks the zip into /var/task and runs it on Amazon Linux 2023 (glibc 2.34) with its own
boto3. What can go wrong without anyone noticing until the first upload fails in AWS:

- Pillow was built from source against this machine's libjpeg/zlib (no wheel for the Python
  version, or a platform mismatch), so ``import PIL`` dies in Lambda with a missing ``.so``;
- the API function imports Pillow at start (slow cold starts, more memory);
- the zip carries things Lambda provides or never needs (boto3, tests, a virtualenv);
- a function the app declares (the API, an event handler, a pure function such as ``operations``)
  is missing from the Terraform, runs another handler, or shares a role or lacks its policy.

``python -m tools.package_check build/dev`` checks all of it; ``--measure`` also times the resize of
a 24 MP JPEG and a ~20 MB PNG with the zip's own Pillow (the numbers in docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PYTHON_TAG = "cp312"  # the Lambda runtime (python3.12) and the Python the Makefile packages with
# Libraries that must come from the wheel's bundled copies, never from the build machine.
# (libz is not bundled: manylinux lets wheels use the system's, and every Lambda runtime has it.)
BUNDLED_LIBS = ("libjpeg", "libpng", "libtiff", "libwebp", "liblcms2", "libopenjp2", "libavif", "libfreetype")
NOT_IN_ZIP = ("boto3/", "botocore/", "s3transfer/", "tests/", ".venv/", "bench/", "tools/")
# pi-heif (HEIC input) is checked like Pillow: its cp312 manylinux wheel, with libheif and
# libde265 bundled in pi_heif.libs/ and loaded from there. A real iPhone photo for the smoke test:
HEIF_LIBS = ("libheif", "libde265")
HEIC_SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "iphone-arrow.heic"
# What the functions run: the app, the pipeline, on-demand renders and the sample photo they serve.
REQUIRED_IN_ZIP = (
    "app.py",
    "chalicelib/imaging.py",
    "chalicelib/storage.py",
    "chalicelib/renders.py",
    "chalicelib/transform.py",
    "chalicelib/microservice.py",
    "chalicelib/sample.jpg",
    "chalice/app.py",
)


def zip_problems(zip_path: Path) -> list[str]:
    """What is wrong with the zip's contents (an empty list when it is fine)."""
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        wheel = [n for n in names if n.lower().startswith("pillow-") and n.endswith(".dist-info/WHEEL")]
        tags = archive.read(wheel[0]).decode().splitlines() if wheel else []
    problems = []
    if not wheel:
        problems.append("no pillow-*.dist-info/WHEEL: Pillow is missing or was not installed from a wheel")
    elif not any(
        t.startswith(f"Tag: {PYTHON_TAG}-{PYTHON_TAG}-manylinux") and t.endswith("_x86_64") for t in tags
    ):
        problems.append(f"Pillow is not a {PYTHON_TAG} manylinux x86_64 wheel: {tags}")
    if not any(n.startswith("pillow.libs/libjpeg") for n in names):
        problems.append(
            "pillow.libs/ has no bundled libjpeg: Pillow was built against this machine's libraries"
        )
    wrong_abi = [
        n
        for n in names
        if n.startswith("PIL/")
        and n.endswith(".so")
        and f"-{PYTHON_TAG[2:]}-x86_64-linux-gnu" not in n.replace("cpython-", "-")
    ]
    problems += [f"{n} is not built for {PYTHON_TAG} x86_64 Linux" for n in wrong_abi]
    problems += _heif_problems(zip_path)
    for required in REQUIRED_IN_ZIP:
        if required not in names:
            problems.append(f"{required} is missing")
    problems += [f"{n} should not be in the zip" for n in names if n.startswith(NOT_IN_ZIP)]
    problems += [f"{n}: bytecode from this machine" for n in names if n.endswith(".pyc")]
    return problems


def _heif_problems(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        wheel = [n for n in names if n.lower().startswith("pi_heif-") and n.endswith(".dist-info/WHEEL")]
        tags = archive.read(wheel[0]).decode().splitlines() if wheel else []
    if not wheel:
        return [
            "no pi_heif-*.dist-info/WHEEL: pi-heif (HEIC input) is missing or was not installed from a wheel"
        ]
    problems = []
    if not any(
        t.startswith(f"Tag: {PYTHON_TAG}-{PYTHON_TAG}-manylinux") and t.endswith("_x86_64") for t in tags
    ):
        problems.append(f"pi-heif is not a {PYTHON_TAG} manylinux x86_64 wheel: {tags}")
    for lib in HEIF_LIBS:
        if not any(n.startswith(f"pi_heif.libs/{lib}") for n in names):
            problems.append(f"pi_heif.libs/ has no bundled {lib}: pi-heif was built against this machine's")
    return problems


_SMOKE = r"""
import io, json, os, sys, time
mode, path = sys.argv[1], sys.argv[2]
def peak_mb():  # VmHWM: ru_maxrss would include the parent's RSS at fork time
    line = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024, 1)
report = {"sys_path": sys.path}
if mode == "smoke":
    import app  # what the API function does at cold start
    report["api_loaded_pil"] = "PIL" in sys.modules
    report["functions"] = ["api_handler", *(s.name for s in app.app.event_sources),
                           *(f.name for f in app.app.pure_lambda_functions)]
    from chalicelib import imaging
    from PIL import Image
    out = imaging.fit(open(path, "rb").read(), (64, 64))
    check = Image.open(io.BytesIO(out.data))
    report["pil_file"] = Image.__file__
    report["fit"] = {"width": out.width, "height": out.height, "content_type": out.content_type,
                     "decoded": [check.format, check.size[0], check.size[1]]}
    # An on-demand render (chalicelib/transform.py) in each format it may write, with the zip's codecs.
    from chalicelib import operations, transform
    report["render"] = {}
    for fmt in ("jpeg", "png", "webp", "avif"):
        spec = operations.parse_query(f"w=32&format={fmt}&filter=sepia")
        out = transform.render(open(path, "rb").read(), spec)
        check = Image.open(io.BytesIO(out.data))
        report["render"][fmt] = [check.format, check.size[0], check.size[1]]
    if len(sys.argv) > 3:  # a HEIC, through the pi-heif plugin imaging registers
        out = imaging.fit(open(sys.argv[3], "rb").read(), (64, 64))
        check = Image.open(io.BytesIO(out.data))
        report["heic"] = {"width": out.width, "height": out.height, "content_type": out.content_type,
                          "decoded": [check.format, check.size[0], check.size[1]]}
    maps = open("/proc/self/maps").read().split("\n")
    report["loaded_libraries"] = sorted({ln.split()[-1] for ln in maps if ".so" in ln and "/" in ln})
else:  # measure: one resize with the default renditions, in a fresh process for a true peak
    from chalicelib import imaging
    data = open(path, "rb").read()
    before = peak_mb()
    start, cpu = time.perf_counter(), time.process_time()
    info, renditions = imaging.render(data, [(400, 400), (1600, 1600)])
    report.update(wall_s=round(time.perf_counter() - start, 3), cpu_s=round(time.process_time() - cpu, 3),
                  megapixels=round(info.width * info.height / 1e6, 1), mib=round(len(data) / 2**20, 1),
                  format=info.format, rss_before_mb=before)
report["peak_rss_mb"] = peak_mb()
print(json.dumps(report))
"""


@contextmanager
def unpacked(zip_path: Path, workdir: Path | None = None) -> Iterator[Path]:
    """The zip extracted as Lambda extracts it into /var/task."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        task = Path(tmp) / "task"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(task)
        (Path(tmp) / "smoke.py").write_text(f"import sys\nsys.path.insert(0, {str(task)!r})\n" + _SMOKE)
        yield task


def run_clean(
    task: Path, mode: str, image: Path, python: str = "", heic: Path | None = None
) -> dict[str, Any]:
    """Run the app from ``task`` in ``python -I -S``: no site-packages, no user site, no PYTHON*
    variables, so only the standard library and the zip's contents are importable."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "UPLOAD_BUCKET": "imageshelf-smoke-uploads",
        "IMAGES_BUCKET": "imageshelf-smoke-images",
    }
    result = subprocess.run(
        [python or sys.executable, "-I", "-S", str(task.parent / "smoke.py"), mode, str(image)]
        + ([str(heic)] if heic else []),
        cwd=task,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the zip does not run in a clean interpreter:\n{result.stderr[-4000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["task_dir"] = str(task)
    return report


def library_problems(report: dict[str, Any]) -> list[str]:
    """Pillow or its image libraries loaded from anywhere but the zip (a source build uses the
    machine's), or Pillow loaded by the API's imports."""
    task = report["task_dir"]
    problems = []
    if not report["pil_file"].startswith(task):
        problems.append(f"PIL was imported from {report['pil_file']}, not from the zip")
    if report["api_loaded_pil"]:
        problems.append("importing app.py loaded PIL: the API function would pay for Pillow at cold start")
    if any(entry.endswith("site-packages") for entry in report["sys_path"]):
        problems.append(f"site-packages leaked into the clean interpreter: {report['sys_path']}")
    for lib in report["loaded_libraries"]:
        name = lib.rsplit("/", 1)[-1]
        if name.startswith(BUNDLED_LIBS) and not lib.startswith(f"{task}/pillow.libs/"):
            problems.append(f"{lib} is loaded from outside the zip's pillow.libs/")
        if name.startswith(HEIF_LIBS) and not lib.startswith(f"{task}/pi_heif.libs/"):
            problems.append(f"{lib} is loaded from outside the zip's pi_heif.libs/")
    return problems


def terraform_functions(tf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``aws_lambda_function`` resources by Chalice's function name (api_handler, resize)."""
    return tf["resource"]["aws_lambda_function"]


def terraform_problems(tf: dict[str, Any], declared: list[str]) -> list[str]:
    """What is wrong with the Terraform's functions, given those the app declares (the smoke
    report's ``functions``): each must be there, run its own handler, and have a role of its own
    carrying a policy; nothing else may be there."""
    functions = terraform_functions(tf)
    policies = tf["resource"].get("aws_iam_role_policy", {})
    problems = []
    for name in declared:
        fn = functions.get(name)
        if fn is None:
            problems.append(f"the app declares function {name}, which chalice.tf.json does not deploy")
            continue
        handler = "app.app" if name == "api_handler" else f"app.{name}"
        if fn.get("handler") != handler:
            problems.append(f"function {name} runs {fn.get('handler')}, not {handler}")
        if fn.get("role") != f"${{aws_iam_role.{name}_role.arn}}" or f"{name}_role" not in policies:
            problems.append(f"function {name} has no role of its own with its policy file")
    problems += [
        f"chalice.tf.json deploys {n}, which the app does not declare" for n in functions if n not in declared
    ]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", type=Path, help="the folder `chalice package` wrote (build/<stage>)")
    parser.add_argument(
        "--measure",
        action="store_true",
        help="also time large images with the zip's Pillow, one fresh process each",
    )
    args = parser.parse_args(argv)
    zip_path = args.build / "deployment.zip"
    problems = zip_problems(zip_path)
    tf = json.loads((args.build / "chalice.tf.json").read_text())
    for name, fn in sorted(terraform_functions(tf).items()):
        print(
            f"{name}: memory {fn['memory_size']} MB, timeout {fn['timeout']} s, "
            f"reserved concurrency {fn.get('reserved_concurrent_executions', 'none')}"
        )
    with tempfile.TemporaryDirectory() as tmp, unpacked(zip_path) as task:
        samples = make_samples(Path(tmp), large=args.measure)
        report = run_clean(task, "smoke", samples.pop("small"), heic=HEIC_SAMPLE)
        problems += library_problems(report)
        problems += terraform_problems(tf, report["functions"])
        print(f"functions the app declares: {', '.join(report['functions'])}")
        print(f"fit() from the zip in a clean interpreter: {report['fit']}; HEIC: {report.get('heic')}")
        print(f"renders from the zip: {report['render']}")
        for name, image in samples.items():
            timing = run_clean(task, "measure", image)
            print(
                f"resize {name} ({timing['format']}, {timing['megapixels']} MP, {timing['mib']} MiB): "
                f"{timing['wall_s']} s wall, {timing['cpu_s']} s CPU, peak RSS {timing['peak_rss_mb']} MB "
                f"({timing['rss_before_mb']} MB before the resize)"
            )
    for problem in problems:
        print("PROBLEM:", problem)
    print(f"{zip_path}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


def make_samples(folder: Path, large: bool = False) -> dict[str, Path]:
    """A small JPEG for the smoke test; with ``large``, the worst cases the limits allow: a 24 MP
    camera JPEG (baseline and progressive), a photo PNG near the 20 MiB upload limit, and a 50 MP
    (MAX_PIXELS) RGBA PNG, which is small on disk but the most pixels to decode."""
    from PIL import Image, ImageFilter

    samples = {"small": folder / "small.jpg"}
    Image.new("RGB", (320, 200), (200, 40, 40)).save(samples["small"], "JPEG", quality=90)
    if not large:
        return samples
    noise = Image.effect_noise((6000, 4000), 40).filter(ImageFilter.GaussianBlur(1.5))
    flipped = noise.transpose(Image.Transpose.ROTATE_180)
    photo = Image.merge("RGB", (noise, noise.point(lambda v: 255 - v), flipped))
    samples["24mp.jpg"] = folder / "24mp.jpg"
    photo.save(samples["24mp.jpg"], "JPEG", quality=92)
    samples["24mp-progressive.jpg"] = folder / "24mp-progressive.jpg"
    photo.save(samples["24mp-progressive.jpg"], "JPEG", quality=92, progressive=True)
    path, width = folder / "photo-20mib.png", 6000
    while True:  # the largest photo PNG under the 20 MiB upload limit (PNG size ~ pixels)
        photo.resize((width, width * 2 // 3)).save(path, "PNG")
        ratio = 20 * 1024 * 1024 / path.stat().st_size
        if ratio >= 1:
            break
        width = int(width * min(0.97, ratio**0.5 * 0.99))
    samples[path.name] = path
    graphic = Image.new("RGBA", (8660, 5770), (30, 120, 200, 128))
    graphic.paste((250, 250, 250, 255), (0, 0, 4330, 2885))
    samples["50mp-rgba.png"] = folder / "50mp-rgba.png"
    graphic.save(samples["50mp-rgba.png"], "PNG")
    return samples


if __name__ == "__main__":
    sys.exit(main())
