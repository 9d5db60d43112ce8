"""The run/status panel every promptseg widget shows under its run button (:class:`_ProgressPanel`, made by its
:class:`~.tasks.TaskRunner`), the layout that keeps it in view under the widget's scrolling controls
(:func:`controls_layout`), and the box with an error's details."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, QObject, QSize, Qt
from qtpy.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from ...errors import PromptsegError, WeightsError, split_message

if TYPE_CHECKING:
    from .tasks import TaskRunner


def show_details(title: str, short: str, details: str, parent: QWidget | None = None) -> QMessageBox:
    """A non-modal box with an error's details (which file goes where), selectable for copying."""
    box = QMessageBox(QMessageBox.Icon.Information, title, short, QMessageBox.StandardButton.Close, parent)
    box.setInformativeText(details)
    box.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    box.setModal(False)
    box.show()
    return box


class _ControlsScroll(QScrollArea):
    """A scroll area that asks for its controls' whole height (QScrollArea asks for a fixed ~450 px), so the dock
    shows them all where the screen has room and scrolls them only where it has not, and never for less than their
    width beside its scroll bar (the rows are never cut at the right, nor scrolled sideways)."""

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        inner = self.widget().sizeHint()
        return QSize(inner.width() + self._bar(), inner.height())

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt's name
        return QSize(self.widget().minimumSizeHint().width() + self._bar(), super().minimumSizeHint().height())

    def _bar(self) -> int:
        """The width beside the controls: the scroll bar and the frame (napari's style gives it one of 1 px)."""
        return self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        # the controls grew or shrank (a section opened, a row shown): the dock asks again how much room they need
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)


def controls_layout(widget: QWidget, runner: TaskRunner, run_button: QWidget | None = None) -> QVBoxLayout:
    """The layout ``widget``'s controls go in: inside a scroll area, with its ``run_button`` (when it has one) and
    ``runner``'s run/status panel pinned under it. napari docks a widget at its full height: the Interactive widget's
    controls (769 px at least) pushed its Commit button and status line off a laptop's screen, and held the window
    at that height."""
    content = QWidget()
    controls = QVBoxLayout(content)
    scroll = _ControlsScroll()
    scroll.setWidget(content)
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # never narrower than the rows
    layout = QVBoxLayout(widget)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.addWidget(scroll, 1)
    panel = QVBoxLayout()
    panel.setContentsMargins(9, 0, 9, 9)
    if run_button is not None:
        panel.addWidget(run_button)
    panel.addWidget(runner.widget)
    layout.addLayout(panel)
    return controls


#: what a :class:`_ProgressPanel` shows: nothing run yet, running, and how the last run ended
STATES = ("ready", "running", "done", "failed", "cancelled")
#: the first line of the previous run's summary shown again after a cancelled run
CANCELLED_PREFIX = "last run cancelled; the run before it:\n"
#: the same after a run whose results could not be added (the previous run's put back)
NOT_ADDED_PREFIX = "last run failed, its results not added; the run before it:\n"


class _ProgressPanel(QWidget):
    """The one run/status display of every promptseg widget: progress bar, Cancel, a status line that always says
    what is happening or how the last run ended (ready / running / done / failed / cancelled), a Details button
    after a failure with details, and a summary of the last successful run (cleared when a run starts, so a failed
    run never shows the previous run's route or metrics; a cancelled run, which leaves the previous run's results
    as they were, gives it back, said to be that run's)."""

    def __init__(self, runner: TaskRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.state = "ready"
        self._details: tuple[str, str, str] | None = None
        #: the summary shown when the running task started: given back if it is cancelled
        self._previous_summary = ""
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.bar.setTextVisible(False)
        self.bar.setMaximumHeight(10)
        self.status = QLabel("ready")
        self.status.setWordWrap(True)
        self.details_button = QPushButton("Details…")
        self.details_button.setToolTip("What went wrong in full (e.g. which weights file to put where)")
        self.details_button.clicked.connect(self.show_details)
        self.details_button.hide()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running computation")
        self.cancel_button.clicked.connect(runner.cancel)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.bar, 1)
        row.addWidget(self.cancel_button)
        status_row = QHBoxLayout()
        status_row.setContentsMargins(0, 0, 0, 0)
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.details_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addLayout(status_row)
        layout.addWidget(self.summary)
        self.set_idle()

    # -- the run's life ----------------------------------------------------------------------------------------
    def start(self, description: str) -> None:
        self.state = "running"
        self.bar.setValue(0)
        self.status.setText(f"{description} ...")
        self.cancel_button.setEnabled(True)
        self._set_details(None)
        self._previous_summary = self.summary.text()
        self.summary.setText("")

    set_busy = start

    def set_progress(self, fraction: float, message: str) -> None:
        if self.state != "running":
            return
        self.bar.setValue(int(round(100 * max(0.0, min(1.0, fraction)))))
        if message:
            self.status.setText(message)

    def done(self, message: str) -> None:
        self.state = "done"
        self.status.setText(message)

    def failed(self, description: str, exc: BaseException) -> None:
        self.state = "failed"
        short, details = split_message(exc)
        if not isinstance(exc, PromptsegError | WeightsError):
            short = f"{type(exc).__name__}: {short}"
        self.status.setText(f"failed: {description}: {short}")
        self._set_details(None if details is None else (description, short, details))

    def cancelled(self, description: str, detail: str = "") -> None:
        self.state = "cancelled"
        self.status.setText(f"{description}: cancelled" + (f" ({detail})" if detail else ""))
        # the previous run's results stay (a cancelled run adds none): so does what its summary said of them
        self.previous_summary_back(CANCELLED_PREFIX)

    def previous_summary_back(self, prefix: str = NOT_ADDED_PREFIX) -> None:
        """The summary shown when the run started, given back under ``prefix``: the run left the previous run's
        results as they were (cancelled, or its own results taken out again)."""
        previous = self._previous_summary
        for said in (CANCELLED_PREFIX, NOT_ADDED_PREFIX):
            previous = previous.removeprefix(said)
        self.summary.setText(f"{prefix}{previous}" if previous else "")

    def set_message(self, message: str) -> None:
        """Replace the status text (e.g. a result handler's own 'done' line, or 'cancelling ...')."""
        self.status.setText(message)

    def note(self, message: str) -> None:
        """A normal situation that needs the user (e.g. no image layer yet): said quietly, only while idle."""
        if self.state == "running":
            return
        self.state = "ready"
        self.status.setText(message)
        self._set_details(None)

    def set_summary(self, text: str) -> None:
        """What the last successful run produced (route, counts, metrics); cleared when the next run starts."""
        self.summary.setText(text)

    def set_idle(self) -> None:
        self.bar.setValue(0)
        self.cancel_button.setEnabled(False)

    # -- details -----------------------------------------------------------------------------------------------
    def _set_details(self, details: tuple[str, str, str] | None) -> None:
        self._details = details
        self.details_button.setVisible(details is not None)

    @property
    def details(self) -> str | None:
        return None if self._details is None else self._details[2]

    def show_details(self) -> QMessageBox | None:
        if self._details is None:
            return None
        description, short, details = self._details
        return show_details(f"promptseg: {description}", short, details, self)
