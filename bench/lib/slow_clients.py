#!/usr/bin/env python3
"""Hold slow HTTP/1.1 clients against one loopback address: slowloris, slow uploads, slow readers.

Three kinds of connection, spread over many loopback source addresses (127.0.1.1, 127.0.1.2, ...;
each socket is bound to its source before it connects):

- slowloris: sends `GET / HTTP/1.1\\r\\nHost: x\\r\\nX-a: ` and then one more byte every interval,
  never finishing the head;
- upload: sends a `POST /upload` head with `Content-Length: 4096`, then a few body bytes every
  interval, never reaching the length;
- reader: sends `GET /1m` with a small SO_RCVBUF (set before connect), then reads a little of the
  answer every interval.

When the server ends one of them (an answer, an EOF, a reset), it is counted by kind and replaced
at once by a new connection of the same kind from the same source, as a real attacker (and
slowhttptest) does, so the pressure lasts the whole run; replacements are capped per second.
Once every one of the connections has been opened and has sent its first bytes, the script prints
one JSON line `{"event": "ready", ...}`. At --duration, or on SIGTERM or SIGINT, it closes
everything and prints `{"event": "done", ...}`: connections opened, replaced and closed by kind,
answers seen by kind and status code, connect failures.

Only loopback addresses are accepted. Every wait has a deadline.
"""

import argparse
import collections
import errno
import heapq
import ipaddress
import json
import random
import selectors
import signal
import socket
import sys
import time

from idle_conns import raise_nofile

KINDS = ("slowloris", "upload", "reader")
UPLOAD_LENGTH = 4096
# Linux's IP_BIND_ADDRESS_NO_PORT: choose the source port at connect, not at bind, so sources can
# share ports towards different destinations.
BIND_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
CONNECT_TIMEOUT = 10.0  # seconds a connect may take before it counts as failed
MAX_KEPT_ANSWER = 8192  # bytes of an answer kept to find its status line and head


class Slot:
    """One place the attacker keeps filled: a kind and a source address."""

    def __init__(self, index, kind, source):
        self.index = index
        self.kind = kind
        self.source = source
        self.held_once = False  # a connection of this slot has sent its first bytes


class Conn:
    """One connection of a slot, driven by the selector loop and the tick heap."""

    def __init__(self, slot, sock, first_bytes):
        self.slot = slot
        self.sock = sock
        self.out = first_bytes
        self.state = "connecting"  # then "sending" (first bytes), then "holding"
        self.since = time.monotonic()
        self.answer = bytearray()
        self.status = None
        self.head_end = None
        self.length = None
        self.body_sent = 0
        self.read = 0
        self.closed = False


def first_bytes(kind, args):
    if kind == "slowloris":
        return b"GET / HTTP/1.1\r\nHost: x\r\nX-a: "
    if kind == "upload":
        return f"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {UPLOAD_LENGTH}\r\n\r\n".encode()
    return f"GET {args.reader_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


class Attack:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.ticks = []  # heap of (due, seq, conn)
        self.seq = 0
        # Slots waiting for a connection, each with why: "first", "replacement" (the server ended
        # the last one) or "retry" (the last connect failed).
        self.pending = collections.deque()
        self.conns = set()
        self.connecting = 0
        self.tokens = float(args.replace_rate)
        self.refilled = time.monotonic()
        self.opened = 0
        self.replaced = dict.fromkeys(KINDS, 0)
        self.closed = {k: {} for k in KINDS}
        self.answers = {k: {} for k in KINDS}  # by kind, then status code
        self.connect_failures = {}
        self.reader_bytes = 0
        self.upload_bytes = 0
        counts = {"slowloris": args.slowloris, "upload": args.uploads, "reader": args.readers}
        sources = [str(args.source_base + i) for i in range(args.sources)]
        self.slots = []
        for kind in KINDS:
            for _ in range(counts[kind]):
                i = len(self.slots)
                self.slots.append(Slot(i, kind, sources[i % len(sources)]))
        self.pending.extend((s, "first") for s in self.slots)

    # -- opening ------------------------------------------------------------------------------

    def open_pending(self, now):
        """Start connections for waiting slots: the first fill limited by --window, replacements
        also by the --replace-rate token bucket."""
        rate = self.args.replace_rate
        self.tokens = min(float(rate), self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        while self.pending and self.connecting < self.args.window:
            slot, why = self.pending[0]
            if why != "first":
                if self.tokens < 1:
                    break
                self.tokens -= 1
            self.pending.popleft()
            self.start(slot, why)

    def start(self, slot, why):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                sock.setsockopt(socket.IPPROTO_IP, BIND_NO_PORT, 1)
            except OSError:
                pass
            if slot.kind == "reader":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.args.rcvbuf)
            sock.bind((slot.source, 0))
            err = sock.connect_ex((self.args.host, self.args.port))
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, errno.errorcode.get(err, str(err)))
        except OSError as e:
            sock.close()
            self.connect_failed(slot, e.strerror or str(e))
            return
        if why == "replacement":
            self.replaced[slot.kind] += 1
        conn = Conn(slot, sock, first_bytes(slot.kind, self.args))
        self.conns.add(conn)
        self.connecting += 1
        self.sel.register(sock, selectors.EVENT_WRITE, conn)

    def connect_failed(self, slot, reason):
        self.connect_failures[reason] = self.connect_failures.get(reason, 0) + 1
        self.pending.append((slot, "retry"))

    # -- events -------------------------------------------------------------------------------

    def on_writable(self, conn):
        if conn.state == "connecting":
            err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.drop(conn)
                self.connecting -= 1
                self.connect_failed(conn.slot, errno.errorcode.get(err, str(err)))
                return
            self.connecting -= 1
            self.opened += 1
            conn.state = "sending"
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.server_closed(conn, how_of(e))
            return
        conn.out = conn.out[sent:]
        if conn.out:
            return
        conn.state = "holding"
        conn.slot.held_once = True
        if conn.slot.kind == "reader":
            # A reader is read on its ticks only: its bytes are always there.
            self.sel.unregister(conn.sock)
        else:
            self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        self.schedule(conn, self.args.interval * random.uniform(0.5, 1.5))

    def on_readable(self, conn):
        """A slowloris or upload connection got bytes or an EOF: either ends it."""
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.server_closed(conn, how_of(e))
            return
        if not data:
            self.server_closed(conn, "eof")
            return
        self.take_answer(conn, data)
        if conn.status is not None:
            self.server_closed(conn, "answered")

    def take_answer(self, conn, data):
        """Keep the start of an answer; note its status (once) and where its head ends."""
        if len(conn.answer) < MAX_KEPT_ANSWER:
            conn.answer += data[: MAX_KEPT_ANSWER - len(conn.answer)]
        if conn.status is None:
            end = conn.answer.find(b"\r\n")
            if end >= 0 or len(conn.answer) >= MAX_KEPT_ANSWER:
                parts = bytes(conn.answer[: max(end, 0)]).split(b" ")
                ok = len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit()
                conn.status = parts[1].decode() if ok else "malformed"
                seen = self.answers[conn.slot.kind]
                seen[conn.status] = seen.get(conn.status, 0) + 1
        if conn.head_end is None and conn.status is not None:
            end = conn.answer.find(b"\r\n\r\n")
            if end >= 0:
                conn.head_end = end + 4
                for line in bytes(conn.answer[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and value.strip().isdigit():
                        conn.length = int(value.strip())

    def on_tick(self, conn):
        kind, sock = conn.slot.kind, conn.sock
        try:
            if kind == "slowloris":
                sock.send(b"b")
            elif kind == "upload":
                n = self.args.upload_bytes
                if conn.body_sent + n < UPLOAD_LENGTH:  # never the whole body
                    sent = sock.send(b"u" * n)
                    conn.body_sent += sent
                    self.upload_bytes += sent
            else:
                data = sock.recv(self.args.read_bytes)
                if not data:
                    self.server_closed(conn, "eof")
                    return
                conn.read += len(data)
                self.reader_bytes += len(data)
                self.take_answer(conn, data)
                if conn.status is not None and conn.status != "200":
                    self.server_closed(conn, "answered")
                    return
                if conn.head_end is not None and conn.length is not None \
                        and conn.read >= conn.head_end + conn.length:
                    self.server_closed(conn, "read to the end")
                    return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            self.server_closed(conn, how_of(e))
            return
        self.schedule(conn, self.args.interval)

    # -- bookkeeping --------------------------------------------------------------------------

    def schedule(self, conn, delay):
        self.seq += 1
        heapq.heappush(self.ticks, (time.monotonic() + delay, self.seq, conn))

    def drop(self, conn):
        if conn.closed:
            return
        conn.closed = True
        self.conns.discard(conn)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def server_closed(self, conn, how):
        """The server ended this connection: count it, and queue its slot for a replacement."""
        if conn.state == "connecting":
            self.connecting -= 1
        self.drop(conn)
        kind = conn.slot.kind
        self.closed[kind][how] = self.closed[kind].get(how, 0) + 1
        self.pending.append((conn.slot, "replacement"))

    def expire_connects(self, now):
        for conn in [c for c in self.conns if c.state == "connecting"]:
            if now - conn.since > CONNECT_TIMEOUT:
                self.drop(conn)
                self.connecting -= 1
                self.connect_failed(conn.slot, "connect timed out")

    def held_by_kind(self):
        out = dict.fromkeys(KINDS, 0)
        for c in self.conns:
            if c.state == "holding":
                out[c.slot.kind] += 1
        return out

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop):
        started = time.monotonic()
        deadline = started + self.args.duration
        open_deadline = started + self.args.open_timeout
        ready = False
        next_expiry = started + 1.0
        while not stop["now"]:
            now = time.monotonic()
            if now >= deadline:
                stop["why"] = "deadline"
                break
            if not ready and (all(s.held_once for s in self.slots) or now >= open_deadline):
                ready = True
                say({"event": "ready", "wanted": len(self.slots),
                     "opened": sum(s.held_once for s in self.slots),
                     "held_now": self.held_by_kind(), "connect_failures": self.connect_failures,
                     "seconds": round(now - started, 2)})
            self.open_pending(now)
            if now >= next_expiry:
                self.expire_connects(now)
                next_expiry = now + 1.0
            while self.ticks and self.ticks[0][0] <= now:
                _, _, conn = heapq.heappop(self.ticks)
                if not conn.closed:
                    self.on_tick(conn)
            timeout = 0.2
            if self.ticks:
                timeout = min(timeout, max(0.0, self.ticks[0][0] - time.monotonic()))
            if self.pending and self.connecting < self.args.window:
                timeout = min(timeout, 0.02)
            for key, events in self.sel.select(timeout=timeout):
                conn = key.data
                if conn.closed:
                    continue
                if events & selectors.EVENT_WRITE:
                    self.on_writable(conn)
                elif events & selectors.EVENT_READ:
                    self.on_readable(conn)
        held = self.held_by_kind()
        for conn in list(self.conns):
            self.drop(conn)
        self.sel.close()
        say({"event": "done", "stopped_by": stop["why"], "seconds": round(time.monotonic() - started, 2),
             "wanted": len(self.slots), "opened": self.opened, "held_at_end": held,
             "replaced": self.replaced, "closed": self.closed, "answers": self.answers,
             "connect_failures": sum(self.connect_failures.values()),
             "connect_failures_why": self.connect_failures,
             "upload_bytes": self.upload_bytes, "reader_bytes": self.reader_bytes})


def how_of(error):
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    return f"error: {error.strerror or error}"


def say(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--duration", type=float, required=True,
                    help="seconds after which everything is closed and the script exits")
    ap.add_argument("--slowloris", type=int, default=1000)
    ap.add_argument("--uploads", type=int, default=200)
    ap.add_argument("--readers", type=int, default=100)
    ap.add_argument("--source-base", default="127.0.1.1", help="first source address")
    ap.add_argument("--sources", type=int, default=200, help="how many source addresses")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between trickles")
    ap.add_argument("--upload-bytes", type=int, default=4, help="body bytes an upload sends each tick")
    ap.add_argument("--read-bytes", type=int, default=1024, help="bytes a reader reads each tick")
    ap.add_argument("--reader-path", default="/1m")
    ap.add_argument("--rcvbuf", type=int, default=4096, help="a reader's SO_RCVBUF")
    ap.add_argument("--window", type=int, default=200, help="connects in flight at once")
    ap.add_argument("--replace-rate", type=float, default=200.0,
                    help="most replacement connections opened per second")
    ap.add_argument("--open-timeout", type=float, default=60.0,
                    help="seconds to open everything before `ready` is printed anyway")
    args = ap.parse_args()

    base = ipaddress.ip_address(args.source_base)
    if not ipaddress.ip_address(args.host).is_loopback or not base.is_loopback \
            or not (base + max(args.sources - 1, 0)).is_loopback:
        sys.exit("slow_clients.py: loopback addresses only")
    if args.sources < 1 or args.interval <= 0 or args.replace_rate <= 0 or args.duration <= 0:
        sys.exit("slow_clients.py: --sources, --interval, --replace-rate and --duration must be positive")
    args.source_base = base
    total = args.slowloris + args.uploads + args.readers
    limit = raise_nofile(total + args.window + 64)
    if limit < total + args.window + 16:
        sys.exit(f"slow_clients.py: open-file limit {limit} is too low for {total} connections")

    stop = {"now": False, "why": "deadline"}

    def on_signal(signum, _frame):
        stop["now"] = True
        stop["why"] = signal.Signals(signum).name

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Attack(args).run(stop)


if __name__ == "__main__":
    main()
