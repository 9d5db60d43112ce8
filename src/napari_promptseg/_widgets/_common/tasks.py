"""One background task at a time (:class:`TaskRunner` in a ``napari.qt.threading`` worker, with progress and
cancel; its run/status panel is :mod:`.panel`'s), errors as notifications, and the widgets told after every run."""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from napari.utils.notifications import (
    Notification,
    NotificationSeverity,
    notification_manager,
    show_info,
    show_warning,
)
from qtpy.QtCore import QEvent, QObject, Qt, QThreadPool, QTimer, Signal, Slot
from qtpy.QtWidgets import (
    QMessageBox,
    QWidget,
)

from ...callbacks import ProgressCallback
from ...errors import CancelledError, PromptsegError, WeightsError, split_message
from .layers import data_token
from .panel import _ProgressPanel, show_details

try:
    from qtpy.sip import delete as _delete_qt
    from qtpy.sip import isdeleted as is_deleted  # whether Qt has deleted an object (its wrapper may outlive it)
    from qtpy.sip import unwrapinstance as _address
except ImportError:  # PySide
    from shiboken6 import delete as _delete_qt
    from shiboken6 import getCppPointer
    from shiboken6 import isValid as _is_valid

    def is_deleted(obj: QObject) -> bool:
        """Whether Qt has deleted ``obj``'s C++ object (its Python wrapper may outlive it)."""
        return not _is_valid(obj)

    def _address(obj: QObject) -> int:
        return getCppPointer(obj)[0]


logger = logging.getLogger(__name__)

#: task(progress, cancel) -> result; runs in a worker thread and must not touch Qt or napari layers
Task = Callable[[ProgressCallback, Callable[[], bool]], Any]


#: how a widget's user gives a segmenter's weights (the CLI's --weights), as messages of missing weights name it
WEIGHTS_FILE_FIELD = "the 'weights file' field"


def task_segmenter(
    progress: ProgressCallback,
    cancel: Callable[[], bool],
    model: str | None = None,
    device: str = "auto",
    weights: str | None = None,
):
    """The named segmenter (default: the bundled one) as a task loads it, from ``weights`` when given (a
    :class:`~.controls.SegmenterBox`'s weights file; loaded again once that file changes) as the CLI's --weights: a
    weights download tells its MB in the run panel and stops at the cancel button, as every other step of a task
    does."""
    from ...models import DEFAULT_SEGMENTER, download_progress, load_segmenter

    model = model or DEFAULT_SEGMENTER
    segmenter = load_segmenter(
        model,
        weights=weights,
        device=device,
        progress=download_progress(progress, cancel, model),
        option=WEIGHTS_FILE_FIELD,  # missing weights are told with the widget's field (they said --weights)
    )
    if cancel():
        raise CancelledError("cancelled")
    return segmenter


def notify_exception(exc: BaseException, context: str = "") -> None:
    """Show an exception as a napari notification: user errors by their short message (details, e.g. where to put
    which weights file, one click away and in the log), bugs with their type and the traceback in the log."""
    prefix = f"{context}: " if context else ""
    if isinstance(exc, CancelledError):
        show_info(f"{prefix}cancelled")
        return
    short, details = split_message(exc)
    if not isinstance(exc, PromptsegError | WeightsError):  # a bug: keep the traceback in the log
        logger.error("%s failed", context or "promptseg task", exc_info=exc)
        short = f"{type(exc).__name__}: {short}"
    elif details:
        logger.warning("%s%s\n  details: %s", prefix, short, details)
    actions = []
    if details:
        title = f"promptseg: {context}" if context else "promptseg"

        def open_details(_toast, title=title, short=f"{prefix}{short}", details=details) -> None:
            # the box is parented to nothing: the notification's toast closes right after the click
            _keep(show_details(title, short, details))

        actions.append(("Details…", open_details))
    message = f"{prefix}{short}"
    notification_manager.dispatch(Notification(message, severity=NotificationSeverity.ERROR, actions=actions))


def notify_warning(message: str, context: str = "") -> None:
    """Something the user should know that does not stop the run (inputs it leaves out): a warning notification,
    prefixed with what said it as errors are (:func:`notify_exception`)."""
    show_warning(f"{context}: {message}" if context else message)


_open_boxes: list[QMessageBox] = []


def _keep(box: QMessageBox) -> None:
    """Keep a parentless details box alive until it is closed."""
    _open_boxes.append(box)
    box.finished.connect(lambda *_: _open_boxes.remove(box) if box in _open_boxes else None)


def notify_once(message: str, shown: set[str]) -> None:
    """A warning that repeats on every preview (e.g. 'points are unreliable') is shown once per widget."""
    if message not in shown:
        shown.add(message)
        show_warning(message)


#: the cancel events of every runner's tasks that have not returned yet (see :func:`_stop_at_exit`)
_running: set[threading.Event] = set()
#: how long Python's exit waits for them to stop at their next cancel check
EXIT_WAIT_MS = 60_000
#: the widgets whose dock was closed (napari's dock close leaves them without a parent), see :func:`_stop_at_exit`
_undocked: weakref.WeakSet[QWidget] = weakref.WeakSet()


@atexit.register  # runs before the Qt clean-up of PyQt's exit handler, registered at its import (before ours)
def _stop_at_exit() -> None:
    """A script that ends while a task runs (e.g. right after ``viewer.close()``, which only asks the task to stop)
    had Qt delete the worker's signals under it: the worker's last signal raised RuntimeError in a Qt thread and Qt
    aborted the process (exit code 134). Its tasks are cancelled now and the process waits for their workers, last
    signals included, to end.

    A widget whose dock was closed has no parent: PyQt's clean-up deleted it while walking its map of Python
    wrappers, and the Python code its deletion runs (the runner's event filter and ``destroyed`` handler, napari's
    application event filter) could reorganise that map under the walk: a segfault (exit code 139) in about one
    run of four. Such widgets are deleted here, before that walk."""
    for cancel_event in list(_running):
        cancel_event.set()
    pool = QThreadPool.globalInstance()  # where napari's workers run: also those past their task, still signalling
    if pool is not None and pool.activeThreadCount() and not pool.waitForDone(EXIT_WAIT_MS):
        logger.warning("promptseg: a task did not stop within %d s of the exit", EXIT_WAIT_MS // 1000)
    _after_run.clear()
    for widget in list(_undocked):
        if not is_deleted(widget) and widget.parent() is None:
            _delete_qt(widget)
    _undocked.clear()


class _Mourner(QObject):
    """Stops a runner's work when Qt deletes it: its tasks see the cancel, its late signals are dropped, its waiting
    jobs let go of their input layers' data events (which would hold them, and the widget).

    The handler is a slot of this object, which lives as long as the process, connected to each runner's
    ``destroyed``. It was a Python function connected there, which PyQt held for the runner's Python wrapper only:
    when the garbage collector freed that wrapper (a widget's wrapper is in reference cycles) while Qt still owned
    the C++ runner (e.g. a widget closed with ``deleteLater``, as pytest-qt's teardown does), PyQt let go of the
    function but kept it connected, and the runner's deletion then ran freed memory: a segfault (in CI, in the next
    test's event loop)."""

    def __init__(self) -> None:
        super().__init__()
        #: C++ address of each living runner -> (its alive flag, its waiting jobs)
        self._runners: dict[int, tuple[threading.Event, dict[str, _Job]]] = {}

    def watch(self, runner: QObject, alive: threading.Event, pending: dict[str, _Job]) -> None:
        self._runners[_address(runner)] = (alive, pending)
        # direct: the slot runs inside the deletion, while the address still names this runner
        runner.destroyed.connect(self._mourn, Qt.ConnectionType.DirectConnection)

    @Slot(QObject)
    def _mourn(self, runner: QObject) -> None:
        alive, pending = self._runners.pop(_address(runner), (None, {}))
        if alive is not None:
            alive.clear()
        for job in pending.values():
            _unwatch(job)


_mourner = _Mourner()


#: what :func:`after_every_run` calls: (its widget, held weakly, and the method's function). Plain references,
#: without the callback a ``WeakMethod`` runs when its widget goes: no Python code of ours in PyQt's exit clean-up
#: (see :func:`_stop_at_exit`, which empties this list as it does ``_undocked``). A Qt signal here, then weak methods,
#: saw test_a_script_that_closes_the_dock_after_an_embedding_exits_cleanly crash (139) now and then
_after_run: list[tuple[weakref.ref, Callable[[Any], None]]] = []


def after_every_run(callback: Callable[[], None]) -> None:
    """Call ``callback``, a widget's method, on the main thread each time a task of any promptseg widget has ended
    (done, failed or cancelled): what one run did (a model it downloaded) changes what other widgets show (which text
    route auto takes, which models are on disk), and each refreshed that after its own runs or control changes only.
    Its widget is held weakly: once Qt or Python has deleted it, it is called no more."""
    owner = getattr(callback, "__self__", None)
    if owner is None:  # a function or lambda: nothing to hold weakly, and it would outlive its widget
        raise TypeError(f"after_every_run takes a widget's method, not {callback!r}")
    _after_run.append((weakref.ref(owner), callback.__func__))  # type: ignore[attr-defined]


def runs_ended() -> None:
    """Call what :func:`after_every_run` was given (main thread: after a task has ended)."""
    for entry in list(_after_run):
        widget, function = entry[0](), entry[1]
        if widget is None or (isinstance(widget, QObject) and is_deleted(widget)):
            with contextlib.suppress(ValueError):  # already gone (the exit's clean-up, a refresh that ran a task)
                _after_run.remove(entry)
            continue
        try:
            function(widget)
        except Exception:  # a refresh must not stop the other widgets' (nor the runner that ended)
            logger.exception("promptseg: refreshing %s after a run failed", type(widget).__name__)


@dataclass
class _Outcome:
    """What a task produced; errors travel as values so napari never turns them into traceback pop-ups."""

    value: Any = None
    error: BaseException | None = None


@dataclass
class _Job:
    key: str
    description: str
    task: Task
    on_done: Callable[[Any], None]
    on_error: Callable[[BaseException], None] | None = None
    inputs: tuple = ()  # the layers the task reads: its result is dropped if one was removed while it ran
    once: bool = False  # a failure whose cause was just said is not said again (see TaskRunner._notify)
    #: a cancel whose error holds what was done before it (``.partial``, e.g. a propagation's planes): given it
    on_partial: Callable[[Any], None] | None = None
    started: float = 0.0
    changed: list = field(default_factory=list)  # names of input layers whose data was replaced while it ran
    watchers: list = field(default_factory=list)  # (layer, callback) connected to the inputs' data events


class TaskRunner(QObject):
    """Runs one task at a time in a napari thread worker, with progress and a cancel that works.

    Submitting a task under a key that is already waiting replaces it ("latest wins"), so a burst of prompt edits
    costs one decode, not one per edit. ``busy`` is True while a task runs or waits.
    """

    _progressed = Signal(object, float, str)  # (job, fraction, message) from the worker thread, to the main thread
    idle = Signal()
    #: Cancel was asked (the button, the dock closed): what a widget keeps waiting for a result goes too
    cancelling = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._pending: dict[str, _Job] = {}
        self._worker = None
        self._job: _Job | None = None
        self._cancel_event: threading.Event | None = None
        self._pbar: napari_progress | None = None
        self.widget = _ProgressPanel(self, parent)
        self._progressed.connect(self._on_progress)
        # when the widget is closed mid-task, the worker must stop and its late signals must not touch dead Qt
        # objects; the flag lives outside this QObject, cleared when Qt deletes it (see :class:`_Mourner`)
        self._alive = threading.Event()
        self._alive.set()
        _mourner.watch(self, self._alive, self._pending)
        # closing a dock only takes the widget out of its dock (it lives on): that is when its work stops too
        self._docked = self._closed = False
        if parent is not None:
            parent.installEventFilter(self)
        #: what the last failure's notification said (its message without the task's name), until a run succeeds
        self._said: str | None = None

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange and watched is self.parent():
            if watched.parent() is not None:
                self._docked, self._closed = True, False
                _undocked.discard(watched)
            elif self._docked:  # its dock was closed: stop the running task, take no new one
                self._closed = True
                _undocked.add(watched)
                self.cancel()
        return False

    @property
    def closed(self) -> bool:
        """The widget's dock was closed: it runs nothing (until it is docked again)."""
        return self._closed

    @property
    def busy(self) -> bool:
        return self._job is not None or bool(self._pending)

    @property
    def state(self) -> str:
        """'ready', 'running', 'done', 'failed' or 'cancelled' (see :data:`~.panel.STATES`)."""
        return self.widget.state

    @property
    def running_key(self) -> str | None:
        return None if self._job is None else self._job.key

    def submit(
        self,
        key: str,
        description: str,
        task: Task,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None] | None = None,
        inputs: tuple = (),
        queue: bool = False,
        repeat: bool = False,
        on_partial: Callable[[Any], None] | None = None,
        once: bool = False,
    ) -> bool:
        """``inputs``: the layers the task reads; a result whose input layer left the viewer, or whose pixels were
        replaced, meanwhile is not pushed back (it would lie over other pixels). A run button's task is refused
        while another task runs (a double click ran the whole job twice); ``queue``: wait for the others instead,
        but not behind a running task of its own key unless ``repeat`` (a preview of prompts edited since). A
        later task under a waiting task's key replaces it: latest wins. A task given while the running one is being
        cancelled waits for it to stop (Cancel, then Run: the run was refused, 'press Cancel first'). Returns whether
        the task was taken. ``on_partial``: a cancelled task whose error holds the work done before the cancel
        (``.partial``) hands it to this, on the main thread, as a result (unless an input layer went or changed).
        ``once``: a task the widget starts by itself (an embedding, a preview): its failure is not notified again
        when its cause (its message) is the one just said."""
        if self._closed:  # the widget's dock was closed (e.g. a layer event of a closed Interactive widget)
            return False
        stopping = self._job is not None and self._cancel_event is not None and self._cancel_event.is_set()
        if not stopping and ((self.busy and not queue) or (self.running_key == key and not repeat)):
            running = self._job.description if self._job is not None else "a task"
            show_info(f"{running} is still running: wait for it, or press Cancel first")
            return False
        job = _Job(key, description, task, on_done, on_error, tuple(inputs), on_partial=on_partial, once=once)
        for layer in job.inputs:
            token = data_token(layer)

            def changed(event=None, layer=layer, token=token, job=job) -> None:
                if data_token(layer) != token and layer.name not in job.changed:
                    job.changed.append(layer.name)

            layer.events.data.connect(changed)
            job.watchers.append((layer, changed))
        replaced = self._pending.pop(key, None)
        if replaced is not None:
            _unwatch(replaced)
        self._pending[key] = job
        if self._job is None:
            self._start_next()
        elif stopping:
            self.widget.set_message(f"cancelling {self._job.description} ...; {description} starts when it has stopped")
        return True

    def refuse(self, exc: BaseException, what: str, once: bool = False) -> None:
        """A run refused on its inputs before it started: the status line says it failed (it must not keep showing
        how an earlier run ended) and a notification says why. While a task runs, its status stays (it is still
        what is happening) and only the notification shows. ``once``: as :meth:`submit`'s."""
        if self._job is None:
            self.widget.summary.setText("")  # as when a run starts: no earlier route or metrics under a failure
            self.widget.failed(what, exc)
        self._notify(exc, what, once)

    def _notify(self, exc: BaseException, what: str, once: bool = False) -> None:
        """A failure's notification. ``once`` (a task the widget started by itself): not when the failure said last
        had the same cause (the same message), so one cause is said once (an image with NaN refused by its embedding,
        then by its preview, gave two notifications). The status line still tells each; a run that succeeds lets
        the cause be said again, and what the user asked for (a Run button) is always answered."""
        short = split_message(exc)[0]
        if once and short == self._said:
            logger.info("%s: %s (said already)", what, short)
            return
        self._said = short
        notify_exception(exc, what)

    def cancel(self) -> None:
        """Drop waiting tasks and ask the running one to stop (it stops at its next cancel check)."""
        self.cancelling.emit()
        for job in self._pending.values():
            _unwatch(job)
        self._pending.clear()
        if self._job is not None:
            assert self._cancel_event is not None
            self._cancel_event.set()
            if self._worker is not None:
                self._worker.quit()
            self.widget.set_message(f"cancelling {self._job.description} ...")

    def _start_next(self) -> None:
        if not self._pending:
            self._job = None
            self.widget.set_idle()
            self.idle.emit()
            return
        key = next(iter(self._pending))
        job = self._job = self._pending.pop(key)
        cancel_event = self._cancel_event = threading.Event()
        _running.add(cancel_event)  # until the task returns (the worker thread discards it)
        alive = self._alive
        worker_ref: list = []

        def cancelled() -> bool:  # the cancel button, napari's quit-all on exit, or the widget being closed
            return cancel_event.is_set() or not alive.is_set() or bool(worker_ref and worker_ref[0].abort_requested)

        def emit(fraction: float, message: str) -> None:
            if alive.is_set():
                self._progressed.emit(job, fraction, message)

        # filled by the worker thread before it finishes (a cancelled worker's `returned` signal is suppressed,
        # and with it what the task said, e.g. where a training run resumes from)
        outcome: list[_Outcome] = []

        def run() -> None:
            with warnings.catch_warnings():
                # library deprecation chatter (timm, torch) is not for the user's notification area
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", FutureWarning)
                try:
                    outcome.append(_Outcome(value=job.task(emit, cancelled)))
                except BaseException as exc:  # noqa: BLE001 - reported on the main thread
                    outcome.append(_Outcome(error=exc))
                finally:
                    _running.discard(cancel_event)

        job.started = time.perf_counter()
        self._pbar = napari_progress(total=100, desc=job.description)
        self.widget.start(job.description)
        worker = self._worker = create_worker(run, _start_thread=False, _ignore_errors=True)
        worker_ref.append(worker)
        pbar = self._pbar

        def finished() -> None:
            if alive.is_set():
                self._on_finished(job, outcome, cancelled())
            else:
                _unwatch(job)  # the widget is gone: its watchers and the activity-dock bar are left to close
                if pbar is not None:
                    pbar.close()
            runs_ended()  # what the task left behind (weights on disk) is for every widget to see

        worker.finished.connect(finished)
        worker.start()

    def _on_progress(self, job: _Job, fraction: float, message: str) -> None:
        pbar = self._pbar
        if job is not self._job or pbar is None:
            return  # a late signal of a task that has finished
        pbar.n = int(round(100 * max(0.0, min(1.0, fraction))))
        self.widget.set_progress(fraction, message)
        pbar.set_description(message)  # refreshes the bar; may process events

    def _removed_inputs(self, job: _Job) -> list[str]:
        """The input layers no longer in the viewer of the widget this runner serves."""
        viewer = getattr(self.parent(), "viewer", None)
        if viewer is None:
            return []
        return [f"layer '{layer.name}'" for layer in job.inputs if layer not in viewer.layers]

    def _on_finished(self, job: _Job, outcome: list[_Outcome], cancelled: bool) -> None:
        _unwatch(job)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._worker = None
        seconds = time.perf_counter() - job.started
        try:
            error = outcome[0].error if outcome else None
            if cancelled or not outcome or isinstance(error, CancelledError):
                # what the method says beyond "cancelled" (where a training run can be resumed from) is kept
                said = str(error) if isinstance(error, CancelledError) else ""
                detail = said.partition("cancelled")[2].strip(" ,;:") if "cancelled" in said else said.strip()
                self.widget.cancelled(job.description, detail)
                show_info(f"{job.description}: cancelled" + (f" ({detail})" if detail else ""))
                partial = getattr(error, "partial", None)
                # the planes done lie over the pixels they came from: not once those went or changed
                kept = not (job.changed or self._closed or self._removed_inputs(job))
                if partial is not None and job.on_partial is not None and kept:
                    job.on_partial(partial)
            elif error is not None:
                self.widget.failed(job.description, error)
                if job.on_error is not None:
                    job.on_error(error)
                self._notify(error, job.description, job.once)
            elif gone := self._removed_inputs(job):
                error = PromptsegError(
                    f"{', '.join(gone)} {'was' if len(gone) == 1 else 'were'} removed while it ran: the result was "
                    "dropped (run it again)"
                )
                self.widget.failed(job.description, error)
                self._notify(error, job.description, job.once)
            elif job.changed:
                names = ", ".join(f"layer '{name}'" for name in job.changed)
                error = PromptsegError(
                    f"the pixels of {names} were replaced while it ran: the result, made from the earlier ones, was "
                    "dropped (run it again)"
                )
                self.widget.failed(job.description, error)
                self._notify(error, job.description, job.once)
            else:
                # the result handler may say more (``widget.done(...)``/``set_message``): it runs after this default
                self._said = None
                self.widget.done(f"{job.description}: done in {seconds:.1f} s")
                job.on_done(outcome[0].value)
        except Exception as exc:  # a failing result handler must not leave the runner stuck
            self.widget.failed(job.description, exc)
            self._notify(exc, job.description, job.once)
        finally:
            self._start_next()


def _unwatch(job: _Job) -> None:
    for layer, callback in job.watchers:
        layer.events.data.disconnect(callback)
    job.watchers.clear()


def debounce_timer(parent: QObject, msec: int, callback: Callable[[], None]) -> QTimer:
    """A single-shot timer: call ``.start()`` on every event; ``callback`` runs once, ``msec`` after the last."""
    timer = QTimer(parent)
    timer.setSingleShot(True)
    timer.setInterval(msec)
    timer.timeout.connect(callback)
    return timer
