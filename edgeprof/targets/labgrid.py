"""Boards of a labgrid lab: a target file with ``kind = "labgrid"`` names a place of a labgrid
coordinator; edgeprof acquires the place, reads the board's SSH address from the place's
``NetworkService`` resource (address, username, port), profiles on it through ``SshTarget``
(known_hosts checks and all) and releases the place when the target is closed: at the end of the
run, on Ctrl-C, and when the board cannot be reached.

labgrid (``pip install "edgeprof[labgrid]"``) documents acquiring a place only as the command
``labgrid-client acquire``; it has no documented Python call for it. edgeprof uses labgrid's own
client session (``labgrid.remote.client.ClientSession``: the coordinator connection, its place and
resource lists, ``get_target_resources``, as labgrid's ``RemotePlace`` does) and sends the same
AcquirePlace / ReleasePlace requests ``labgrid-client`` sends, through the session's gRPC stub.
Those two requests are labgrid internals, hence the pin to labgrid 26 in the extra.

Each exchange with the coordinator is one short session on edgeprof's labgrid event loop (a
thread of its own), so nothing of labgrid's runs while the board is measured, a coordinator that goes away
mid-run costs nothing until release, and Ctrl-C never leaves a request half-sent: a release
always waits for a pending acquire first. The coordinator keeps a place acquired when its client
disconnects, so a process killed outright (SIGKILL) leaves it acquired: release it with
``labgrid-client -x ADDRESS -p PLACE release``.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..errors import InputError, WorkerError
from .config import TargetSpec
from .ssh import _OPEN_TARGETS, SshTarget

DEFAULT_PORT = 20408  # labgrid-coordinator's
INSTALL_HINT = 'pip install "edgeprof[labgrid]"'


@dataclass(frozen=True)
class LabgridPlace:
    """Where a board is reserved: the coordinator (HOST:PORT), the place, and which of its
    NetworkService resources is the board when it has several."""
    coordinator: str
    place: str
    resource: str | None = None


class LabgridError(Exception):
    """A one-line reason, prefixed with the target's name and place by the caller."""


def _coordinator(value: str, where: str) -> str:
    text = value.strip()
    try:
        port = urlsplit(f"//{text}").port
    except ValueError:
        raise InputError(f"{where}: {value!r} is not HOST or HOST:PORT (port 1-65535)") from None
    if not text or any(c.isspace() or c in "/@?#" for c in text) or port == 0:
        raise InputError(f"{where}: {value!r} is not HOST or HOST:PORT (port 1-65535)")
    return text if port is not None else f"{text}:{DEFAULT_PORT}"


def place_from_dict(raw: dict[str, Any], where: Callable[[str], str]) -> LabgridPlace:
    """The labgrid keys of a target file: ``place`` (required), ``coordinator`` (default
    $LG_COORDINATOR, else 127.0.0.1:20408, as labgrid-client), ``resource`` (optional)."""
    place = raw.get("place")
    if not isinstance(place, str) or not place.strip() or any(c.isspace() for c in place):
        raise InputError(f"{where('place')}: required for kind = \"labgrid\": the name of a place "
                         "of the coordinator (labgrid-client places)")
    coord = raw.get("coordinator", os.environ.get("LG_COORDINATOR") or f"127.0.0.1:{DEFAULT_PORT}")
    if not isinstance(coord, str):
        raise InputError(f"{where('coordinator')}: expected \"HOST:PORT\", got "
                         f"{type(coord).__name__}")
    resource = raw.get("resource")
    if resource is not None and (not isinstance(resource, str) or not resource.strip()):
        raise InputError(f"{where('resource')}: expected the name of a NetworkService resource "
                         "of the place")
    return LabgridPlace(coordinator=_coordinator(coord, where("coordinator")), place=place,
                        resource=resource)


# --------------------------------------------------------------------------------------------
# labgrid, loaded on first use
# --------------------------------------------------------------------------------------------

class _QuietLabgrid(logging.Filter):
    """labgrid's client logs a lost coordinator on the root logger; edgeprof reports it itself,
    in one line, so those records are dropped (nothing else is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and "labgrid" in record.pathname.replace("\\", "/")
                    .split("/")[-3:-1])


_LIB: dict[str, Any] = {}


def _labgrid() -> dict[str, Any]:
    if not _LIB:
        hook = sys.excepthook  # labgrid.remote.client replaces it at import; keep the user's
        try:
            import grpc
            from labgrid.remote.client import ClientSession, Error
            from labgrid.remote.generated import labgrid_coordinator_pb2
        except ImportError as exc:
            raise WorkerError(f"kind = \"labgrid\" needs the labgrid package ({exc}): "
                              f"{INSTALL_HINT}") from None
        finally:
            sys.excepthook = hook
        logging.getLogger().addFilter(_QuietLabgrid())
        _LIB.update(grpc=grpc, ClientSession=ClientSession, Error=Error,
                    pb=labgrid_coordinator_pb2)
    return _LIB


def _why(exc: BaseException) -> str:
    lib = _LIB
    if lib and isinstance(exc, lib["grpc"].aio.AioRpcError):
        text = exc.details() or exc.code().name
    else:
        text = " ".join(str(a) for a in getattr(exc, "args", ()) if a) or type(exc).__name__
    return " ".join(text.split())


async def _in_session(address: str, timeout_s: float,
                      op: Callable[[Any], Awaitable[Any]]) -> Any:
    lib = _LIB
    session = lib["ClientSession"](address, asyncio.get_running_loop())
    try:
        try:
            await asyncio.wait_for(session.start(), timeout_s)
        except asyncio.TimeoutError:
            raise LabgridError(f"no answer from the labgrid coordinator {address} within "
                               f"{timeout_s:g} s (connect_timeout_s)") from None
        except lib["Error"]:
            raise LabgridError(f"cannot reach the labgrid coordinator {address} (is "
                               "labgrid-coordinator running there?)") from None
        return await op(session)
    finally:
        try:
            await asyncio.wait_for(session.stop(), 5.0)
        except BaseException:
            pass
        try:
            await asyncio.wait_for(session.close(), 5.0)
        except BaseException:
            pass


_POLL_S = 1.0  # how often a queued acquire (--wait) asks again
# The coordinator takes one client stream per peer, and gRPC shares one connection among the
# channels of a process to one address: sessions of this process with one coordinator take turns.
# Every exchange runs on one event loop, on a daemon thread that lives as long as the process:
# gRPC's completion queue binds to each loop it has served and keeps delivering late events of a
# finished call to it, so a loop closed after each exchange made those deliveries fail ("Event
# loop is closed", logged with a traceback by the next exchange's loop).
_LOOP: dict[str, Any] = {}
_LOOP_LOCK = threading.Lock()


def _loop() -> asyncio.AbstractEventLoop | None:
    """The process's labgrid event loop, started on first use; None when no thread can start
    (at interpreter exit on Python 3.12+)."""
    with _LOOP_LOCK:
        loop = _LOOP.get("loop")
        if loop is not None and _LOOP["thread"].is_alive():
            return loop
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="edgeprof-labgrid", daemon=True)
        try:
            thread.start()
        except RuntimeError:
            loop.close()
            return None
        _LOOP.update(loop=loop, thread=thread, turns={})
        return loop


async def _turned(address: str, timeout_s: float, op: Callable[[Any], Awaitable[Any]]) -> Any:
    turns = _LOOP["turns"]  # asyncio locks, made and used on the loop's own thread
    turn = turns.setdefault(address, asyncio.Lock())
    async with turn:
        return await _in_session(address, timeout_s, op)


class _Exchange:
    """``op(session)`` in a fresh client session on the process's labgrid event loop; one
    session at a time per coordinator in this process."""

    def __init__(self, address: str, timeout_s: float, op: Callable[[Any], Awaitable[Any]]):
        _labgrid()
        self.interrupted = False
        self.deadline_s = 2 * timeout_s + 10.0  # session start, the request, and the goodbye
        loop = _loop()
        if loop is not None:
            self.future: concurrent.futures.Future = asyncio.run_coroutine_threadsafe(
                _turned(address, timeout_s, op), loop)
            return
        # at interpreter exit: inline, on a loop of its own
        self.future = concurrent.futures.Future()
        inline = asyncio.new_event_loop()
        try:
            self.future.set_result(inline.run_until_complete(
                _in_session(address, timeout_s, op)))
        except BaseException as exc:  # handed to wait()
            self.future.set_exception(exc)
        finally:
            inline.close()

    def wait(self, shielded: bool = False) -> Any:
        """The result (or the exception) of ``op``. Ctrl-C while waiting is raised at once, the
        exchange going on by itself; ``shielded``: Ctrl-C only sets ``interrupted`` and the
        exchange is waited for (a release is never cut short)."""
        end = time.monotonic() + self.deadline_s
        while not self.future.done() and (not shielded or time.monotonic() < end):
            try:
                concurrent.futures.wait([self.future], timeout=0.1)
            except KeyboardInterrupt:
                if not shielded:
                    raise
                self.interrupted = True
        if not self.future.done():
            raise LabgridError(f"no answer from the coordinator within {self.deadline_s:g} s")
        return self.future.result()

    def done(self) -> bool:
        return self.future.done()


# --------------------------------------------------------------------------------------------
# The target
# --------------------------------------------------------------------------------------------

class LabgridTarget(SshTarget):
    """A board behind a labgrid place: acquired on first use (``connect``), released by
    ``close()``/``abort()``. Until acquired, ``spec.host`` is what the target file gives (often
    nothing); afterwards it is the address the place's NetworkService names."""

    def __init__(self, spec: TargetSpec, accept_new_host_key: bool = False,
                 affinity: tuple[int, ...] | None = None, wait: bool = False):
        if spec.labgrid is None:
            raise InputError(f"{spec.source}: not a labgrid target (kind = \"labgrid\")")
        super().__init__(spec, accept_new_host_key=accept_new_host_key, affinity=affinity,
                         wait=wait)
        self.file_spec = spec
        self.lab: LabgridPlace = spec.labgrid
        self.group_key = ("labgrid", self.lab.coordinator, self.lab.place)
        self.owner: str | None = None      # host/user, as the coordinator names this client
        self.acquire_s: float | None = None
        self.waited_s: float = 0.0
        self._lg_lock = threading.RLock()
        self._held = False
        self._pending: _Exchange | None = None   # an acquire in flight (or finished)
        self._sent = {"acquire": False, "cancel": False}

    def __repr__(self) -> str:
        return f"LabgridTarget({self.name!r}, {self.lab.place!r} at {self.lab.coordinator!r})"

    # -- acquire ------------------------------------------------------------------------------
    async def _acquire_op(self, session: Any) -> str | list[tuple[str, str, dict, dict, bool]]:
        """The place's resources once acquired; with ``wait``, the owner's name while someone
        else holds it."""
        lib, lab, sent = _LIB, self.lab, self._sent
        timeout_s = self.file_spec.connect_timeout_s
        me = f"{session.gethostname()}/{session.getuser()}"
        self.owner = me
        place = session.places.get(lab.place)
        if place is None:
            known = ", ".join(sorted(session.places)) or "none"
            raise LabgridError(f"no place {lab.place!r} on the coordinator {lab.coordinator} "
                               f"(places: {known})")
        if sent["cancel"]:
            raise LabgridError("interrupted")
        if place.acquired and place.acquired != me and self.wait:
            return place.acquired  # queued: asked again in a moment, in a new session
        if place.acquired == me:
            raise LabgridError(
                f"place {lab.place} is already acquired by you ({me}), by labgrid-client or an "
                f"edgeprof run that did not finish: release it with labgrid-client -x "
                f"{lab.coordinator} -p {lab.place} release")
        if place.acquired:
            raise LabgridError(
                f"place {lab.place} is already acquired by {place.acquired}; wait for it to be "
                "released (or rerun with --wait to queue for it)")
        sent["acquire"] = True  # from here on, a release is owed (fromuser: only if ours)
        try:
            await asyncio.wait_for(session.stub.AcquirePlace(
                lib["pb"].AcquirePlaceRequest(placename=lab.place)), timeout_s)
        except lib["grpc"].aio.AioRpcError as exc:
            raise LabgridError(f"the coordinator refused to acquire place {lab.place}: "
                               f"{_why(exc)}") from None
        except asyncio.TimeoutError:
            raise LabgridError(f"the coordinator did not acquire place {lab.place} within "
                               f"{timeout_s:g} s") from None
        await asyncio.wait_for(session.sync_with_coordinator(), timeout_s)
        place = session.places[lab.place]
        if place.acquired != me:
            raise LabgridError(f"place {lab.place} is acquired by {place.acquired}, not by "
                               f"this client ({me})")
        try:
            entries = session.get_target_resources(place)
        except lib["Error"] as exc:
            raise LabgridError(_why(exc)) from None
        return [(name, cls, dict(e.args), dict(e.extra or {}), bool(e.avail))
                for (name, cls), e in sorted(entries.items())]

    def _resolve(self, resources: list[tuple[str, str, dict, dict, bool]]) -> TargetSpec:
        """The board's SSH address: the file's host/port/user where given, else the place's
        NetworkService (``resource`` picks one when there are several)."""
        spec, lab = self.file_spec, self.lab
        services = [r for r in resources if r[1] == "NetworkService"]
        if lab.resource is not None:
            chosen = [r for r in services if r[0] == lab.resource]
            if not chosen:
                have = ", ".join(r[0] for r in services) or "none"
                raise LabgridError(f"place {lab.place} has no NetworkService named "
                                   f"{lab.resource!r} (resource in {spec.source}; its "
                                   f"NetworkService resources: {have})")
            services = chosen
        if not services:
            if spec.host:
                return spec  # the file names the board; the place is the reservation
            have = ", ".join(f"{cls} {name}" for name, cls, *_ in resources) or "no resources"
            raise LabgridError(f"place {lab.place} has no NetworkService resource (it has: "
                               f"{have}): export the board's SSH address (address, username, "
                               f"port) as a NetworkService, or set host in {spec.source}")
        if len(services) > 1:
            raise LabgridError(f"place {lab.place} has several NetworkService resources "
                               f"({', '.join(r[0] for r in services)}): choose one with "
                               f"resource = \"NAME\" in {spec.source}")
        name, _cls, args, extra, avail = services[0]
        if not avail:
            raise LabgridError(f"the NetworkService {name} of place {lab.place} is not "
                               "available (is its exporter running?)")
        address = args.get("address")
        if not spec.host and extra.get("proxy_required"):
            raise LabgridError(f"the NetworkService {name} of place {lab.place} ({address}) is "
                               f"reachable only through its exporter {extra.get('proxy')}: set "
                               f"host (and port) in {spec.source} to an address this machine "
                               "reaches")
        host = spec.host or address
        port = spec.port or args.get("port") or 22
        user = spec.user or args.get("username") or None
        if not isinstance(host, str) or not host.strip() or any(c.isspace() for c in host) \
                or host.startswith("-"):
            raise LabgridError(f"the NetworkService {name} of place {lab.place} has no usable "
                               f"address ({address!r})")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise LabgridError(f"the NetworkService {name} of place {lab.place} has port "
                               f"{port!r}, not 1-65535")
        return dataclasses.replace(spec, host=host, port=port, user=user)

    def acquire(self) -> None:
        """Acquire the place (once) and point the SSH target at its board. On any failure,
        Ctrl-C included, nothing stays acquired."""
        with self._lg_lock:
            if self._fatal:
                raise WorkerError(self._fatal)
            if self._held:
                return
            _OPEN_TARGETS.add(self)  # released at exit like a connected target
            self._sent = {"acquire": False, "cancel": False}
            t0 = time.perf_counter()
            t_wait = 0.0
            try:
                while True:
                    self._pending = _Exchange(self.lab.coordinator,
                                              self.file_spec.connect_timeout_s, self._acquire_op)
                    got = self._pending.wait()
                    if not isinstance(got, str):
                        break
                    if not t_wait:  # one line, so a queued run does not look hung
                        t_wait = time.perf_counter()
                        print(f"{self.name}: waiting for labgrid place {self.lab.place} "
                              f"(acquired by {got})", file=sys.stderr, flush=True)
                    time.sleep(_POLL_S)
                self.waited_s = time.perf_counter() - t_wait if t_wait else 0.0
                spec = self._resolve(got)
            except WorkerError as exc:  # labgrid is not installed
                self._fatal = str(exc)
                raise
            except Exception as exc:  # LabgridError, or the coordinator went away
                self._release_locked()
                self._fatal = str(self._err(_why(exc)))
                raise WorkerError(self._fatal) from None
            except BaseException:  # Ctrl-C: the pending acquire is waited for, then released
                self._sent["cancel"] = True
                self._release_locked()
                raise
            self.acquire_s = time.perf_counter() - t0 - self.waited_s
            self._held = True
            self.spec = spec

    # -- release ------------------------------------------------------------------------------
    async def _release_op(self, session: Any) -> str | None:
        lib, lab = _LIB, self.lab
        timeout_s = self.file_spec.connect_timeout_s
        await asyncio.wait_for(session.stub.ReleasePlace(lib["pb"].ReleasePlaceRequest(
            placename=lab.place, fromuser=self.owner)), timeout_s)  # a no-op unless ours
        await asyncio.wait_for(session.sync_with_coordinator(), timeout_s)
        place = session.places.get(lab.place)
        return place.acquired if place is not None else None

    def _release_locked(self) -> None:
        """Release what this target acquired. Ctrl-C meanwhile is held back until it is done,
        then raised."""
        interrupted = False
        pending, self._pending = self._pending, None
        if pending is not None and not pending.done():
            try:
                pending.wait(shielded=True)  # the release must come after the acquire
            except BaseException:
                pass
            interrupted = pending.interrupted
        self._held = False
        if self._sent["acquire"] and self.owner:
            self._sent["acquire"] = False
            ex = None
            try:
                ex = _Exchange(self.lab.coordinator, self.file_spec.connect_timeout_s,
                               self._release_op)
                still = ex.wait(shielded=True)
                problem = f"still acquired by {still}" if still == self.owner else None
            except BaseException as exc:
                problem = _why(exc)
            interrupted = interrupted or bool(ex and ex.interrupted)
            self._warn_not_released(problem)
        if interrupted:
            raise KeyboardInterrupt

    def _warn_not_released(self, problem: str | None) -> None:
        if problem:  # close() must not hide the run's own outcome: one line on stderr
            print(f"edgeprof: warning: {self.name}: labgrid place {self.lab.place} was not "
                  f"released ({problem}); release it with labgrid-client -x "
                  f"{self.lab.coordinator} -p {self.lab.place} release", file=sys.stderr,
                  flush=True)

    def release(self) -> None:
        """Release the place if this target acquired it (a place acquired by anyone else,
        you in another shell included, is never released)."""
        with self._lg_lock:
            self._release_locked()

    # -- the SSH target on top ----------------------------------------------------------------
    def connect(self) -> None:
        self.acquire()
        try:
            super().connect()
        except BaseException:  # the board cannot be reached: it is not ours to hold
            self.release()
            raise

    def abort(self) -> None:
        self._sent["cancel"] = True  # an acquire queued with --wait stops waiting
        super().abort()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release()
