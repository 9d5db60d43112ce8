"""README screenshots: each widget docked in a real napari viewer, run on the bundled sample data.

    make screenshots   # = xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/screenshots.py -o docs/images

For each of the four widgets: a fresh viewer, ``File > Open Sample > Prompt segmentation`` (``viewer.open_sample``),
the widget docked and driven through its own methods (the same calls its buttons make), the thread worker awaited,
then ``viewer.screenshot(canvas_only=False)`` (canvas + dock + layer list), downscaled and saved as a small PNG.
The reference library (only the starter 'nucleus' exemplar) and napari's settings are fresh temporary ones, so the
user's own are neither read nor changed. Takes ~1–2 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QApplication

WINDOW = (1270, 800)  # the window's size before the screenshot (logical pixels)
WIDTH = 960  # width of the saved PNG
TIMEOUT_S = 600


def _wait(app, widget, timeout: float = TIMEOUT_S) -> None:
    """Process Qt events until the widget's worker is done (the widgets' own ``is_idle``)."""
    start = time.monotonic()
    while not widget.is_idle:
        app.processEvents()
        time.sleep(0.05)
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{type(widget).__name__} still busy after {timeout} s")
    for _ in range(20):  # let the new layers draw
        app.processEvents()
        time.sleep(0.02)


def _viewer(napari, title: str):
    viewer = napari.Viewer(title=title, show=True)
    viewer.window._qt_window.resize(*WINDOW)
    return viewer


def _save(viewer, path: Path) -> int:
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from PIL import Image

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.hide()  # notification toasts would cover the canvas
    viewer.reset_view()  # fit the image to the canvas as it is now, with the widget docked
    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.02)
    shot = viewer.screenshot(canvas_only=False, flash=False)  # (H, W, 4) uint8
    image = Image.fromarray(np.asarray(shot)[..., :3])
    height = round(image.height * WIDTH / image.width)
    image = image.resize((WIDTH, height), Image.LANCZOS)
    # an adaptive palette keeps a UI screenshot sharp at a fraction of the RGB size
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    size = path.stat().st_size
    print(f"{path}: {image.width}x{image.height}, {size / 1024:.0f} KiB", flush=True)
    viewer.close()
    return size


def _status(widget) -> str:
    panel = widget.runner.widget
    return f"{panel.state}: {panel.status.text()} | {panel.summary.text()}".replace("\n", "; ")


def interactive(napari, app, out: Path) -> int:
    from skimage.measure import regionprops

    from napari_promptseg._widgets.interactive import InteractiveWidget

    viewer = _viewer(napari, "Interactive (boxes and points)")
    viewer.open_sample("napari-promptseg", "nuclei")
    image = viewer.layers["nuclei"]
    truth = viewer.layers["nuclei ground truth"].data
    widget = InteractiveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Interactive (boxes and points)")
    widget.image_picker.set_layer(image)
    _wait(app, widget)
    widget.new_prompt_layers()
    boxes = widget.shapes_picker.layer()
    # boxes around five of the larger nuclei, as a user would draw them (one pixel of margin)
    for region in sorted(regionprops(truth), key=lambda r: -r.area)[:8:2]:
        r0, c0, r1, c1 = region.bbox
        boxes.add_rectangles(np.array([[r0 - 1, c0 - 1], [r1, c1]]))
    _wait(app, widget)
    widget.commit()
    _wait(app, widget)
    region = sorted(regionprops(truth), key=lambda r: -r.area)[9]
    r0, c0, r1, c1 = region.bbox
    boxes.add_rectangles(np.array([[r0 - 1, c0 - 1], [r1, c1]]))  # one more, still a preview
    _wait(app, widget)
    viewer.layers.selection.active = boxes
    print("interactive:", _status(widget), flush=True)
    return _save(viewer, out / "interactive.png")


def oneshot(napari, app, out: Path) -> int:
    from napari_promptseg._widgets.oneshot import OneShotWidget

    viewer = _viewer(napari, "One-shot reference")
    viewer.open_sample("napari-promptseg", "nuclei_text")
    viewer.open_sample("napari-promptseg", "nuclei")
    reference_labels = viewer.layers["nuclei ground truth"]
    reference_labels.visible = True
    widget = OneShotWidget(viewer)
    viewer.window.add_dock_widget(widget, name="One-shot reference")
    widget.reference.set_layer(viewer.layers["nuclei"])
    widget.reference_labels.set_layer(reference_labels)
    widget.target.set_layer(viewer.layers["nuclei (text prompt)"])
    widget.run()
    _wait(app, widget)
    # show the target and its result; the reference stays in the layer list
    for layer in viewer.layers:
        layer.visible = layer.name.startswith("nuclei (text prompt)") and "ground truth" not in layer.name
    print("one-shot:", _status(widget), flush=True)
    return _save(viewer, out / "oneshot.png")


def registration(napari, app, out: Path) -> int:
    from napari_promptseg._widgets.registration import RegistrationWidget

    viewer = _viewer(napari, "Registration")
    viewer.open_sample("napari-promptseg", "registration_pair")
    widget = RegistrationWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Registration")
    widget.fixed_picker.set_layer(viewer.layers["registration fixed"])
    widget.moving_picker.set_layer(viewer.layers["registration moving"])
    widget.fixed_points.set_layer(viewer.layers["registration fixed landmarks"])
    widget.moving_points.set_layer(viewer.layers["registration moving landmarks"])
    widget.show_grid.setChecked(True)
    widget.run()
    _wait(app, widget)
    viewer.layers["registration moving"].visible = False  # the unregistered moving image would cover the result
    viewer.layers["registration fixed landmarks"].visible = True
    print("registration:", _status(widget), flush=True)
    return _save(viewer, out / "registration.png")


def text(napari, app, out: Path) -> int:
    from napari_promptseg._widgets.text import TextPromptWidget

    viewer = _viewer(napari, "Text prompt")
    viewer.open_sample("napari-promptseg", "nuclei_text")
    widget = TextPromptWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Text prompt")
    widget.image.set_layer(viewer.layers["nuclei (text prompt)"])
    widget.prompt.setText("nuclei")
    widget.run()
    _wait(app, widget)
    print("text:", _status(widget), flush=True)
    return _save(viewer, out / "text.png")


SHOTS = {"interactive": interactive, "oneshot": oneshot, "registration": registration, "text": text}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/images"))
    parser.add_argument("--only", nargs="*", choices=sorted(SHOTS), help="some of the screenshots (default: all)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    os.environ["PROMPTSEG_OFFLINE"] = "1"
    library = tempfile.TemporaryDirectory(prefix="promptseg-screenshots-")
    os.environ["PROMPTSEG_LIBRARY"] = str(Path(library.name) / "library")  # a new library: the starter exemplar
    # napari settings of our own: the user's settings file is neither read nor changed
    os.environ["NAPARI_CONFIG"] = str(Path(library.name) / "napari-settings.yaml")

    import napari

    from napari_promptseg._widgets._common import load_triton_safely

    load_triton_safely()  # before the first canvas exists (see the function)
    app = QApplication.instance() or napari.qt.get_qapp()
    total = 0
    for name in args.only or list(SHOTS):
        total += SHOTS[name](napari, app, args.output)
    print(f"total {total / 1024:.0f} KiB", flush=True)
    library.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
