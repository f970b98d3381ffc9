#!/usr/bin/env python3
"""Hold many idle HTTP/1.1 keep-alive connections open against one loopback address.

Each connection sends one `GET` and reads the whole answer (it must be a 200 that keeps the
connection alive), then stays idle. When all are open the script prints one JSON line
`{"event": "ready", ...}` and waits:

- on SIGUSR1 it checks the connections: how many are still open (a peek that would block) and
  how many the peer has closed; with --recheck it then sends a second request on every open
  connection and counts the answers. It prints `{"event": "done", ...}` and exits 0.
- on SIGTERM or SIGINT it just closes everything and exits.

Only loopback addresses are accepted. Every wait has a deadline.
"""

import argparse
import errno
import ipaddress
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time


def raise_nofile(wanted):
    """Raise this process's open-file limit to at least `wanted` (the hard limit too, as root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


class Exchange:
    """One request/response on one connection, driven by the selector loop."""

    def __init__(self, sock, request):
        self.sock = sock
        self.out = request
        self.buf = b""
        self.need = None  # total bytes of head + body once the head is parsed
        self.status = None
        self.keep_alive = True

    def feed(self, data):
        """Add received bytes; return True when the whole response has arrived."""
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buf[:end].decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ")[1])
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value.strip())
                elif name == "connection" and "close" in value.lower():
                    self.keep_alive = False
            self.need = end + 4 + length
        return len(self.buf) >= self.need


def new_connection(host, port):
    """A non-blocking socket with its connect under way (finished inside run_exchanges)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    err = sock.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, os.strerror(err))
    return sock


def run_exchanges(sources, request, window, deadline):
    """Send `request` on every socket `sources` yields (each is a socket, or a function making
    one), at most `window` in flight. Returns the sockets answered with a 200 that keeps the
    connection open, and a count of failures by reason."""
    sel = selectors.DefaultSelector()
    pending = list(sources)
    pending.reverse()
    in_flight = 0
    answered, failed = [], {}

    def fail(reason):
        failed[reason] = failed.get(reason, 0) + 1

    def start_one():
        nonlocal in_flight
        source = pending.pop()
        try:
            sock = source() if callable(source) else source
        except OSError as e:
            fail(f"connect: {e.strerror}")
            return
        sel.register(sock, selectors.EVENT_WRITE, Exchange(sock, request))
        in_flight += 1

    while pending and in_flight < window:
        start_one()
    while in_flight:
        if time.monotonic() > deadline:
            break
        for key, events in sel.select(timeout=0.5):
            ex, sock = key.data, key.fileobj
            done, reason = False, None
            try:
                if events & selectors.EVENT_WRITE:
                    try:
                        sent = sock.send(ex.out)
                        ex.out = ex.out[sent:]
                        if not ex.out:
                            sel.modify(sock, selectors.EVENT_READ, ex)
                    except (BlockingIOError, InterruptedError):
                        pass
                elif events & selectors.EVENT_READ:
                    data = sock.recv(65536)
                    if not data:
                        done, reason = True, "closed without a full answer"
                    elif ex.feed(data):
                        done = True
                        if ex.status != 200:
                            reason = f"status {ex.status}"
                        elif not ex.keep_alive:
                            reason = "answered with Connection: close"
                        elif len(ex.buf) != ex.need:
                            reason = "extra bytes after the answer"
            except OSError as e:
                done, reason = True, f"socket: {e.strerror or e}"
            except (ValueError, IndexError):
                done, reason = True, "malformed answer"
            if done:
                sel.unregister(sock)
                in_flight -= 1
                if reason is None:
                    answered.append(sock)
                else:
                    fail(reason)
                    sock.close()
                while pending and in_flight < window:
                    start_one()
    # Whatever is still in flight or never started at the deadline counts as failed.
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        fail("no answer before the deadline")
    for source in pending:
        if not callable(source):
            source.close()
        fail("not started before the deadline")
    sel.close()
    return answered, failed


def still_open(sock):
    """True when the peer has not closed the connection (a peek would block)."""
    try:
        data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return bool(data)  # unexpected bytes: open, but counted below as open


def say(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--path", default="/")
    ap.add_argument("--window", type=int, default=200, help="requests in flight at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for each phase")
    ap.add_argument("--recheck", action="store_true", help="on SIGUSR1 send a second request on each")
    args = ap.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("idle_conns.py: loopback addresses only")

    limit = raise_nofile(args.count + 64)
    if limit < args.count + 16:
        sys.exit(f"idle_conns.py: open-file limit {limit} is too low for {args.count} connections")
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})

    request = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n\r\n".encode()
    started = time.monotonic()
    connect = lambda: new_connection(args.host, args.port)  # noqa: E731
    idle, failed = run_exchanges([connect] * args.count, request, args.window,
                                 started + args.timeout)
    say({"event": "ready", "opened": len(idle), "failed": sum(failed.values()),
         "why": failed, "seconds": round(time.monotonic() - started, 2)})

    sig = signal.sigwait({signal.SIGUSR1, signal.SIGTERM, signal.SIGINT})
    if sig != signal.SIGUSR1:
        for sock in idle:
            sock.close()
        return
    alive = [s for s in idle if still_open(s)]
    result = {"event": "done", "held": len(idle), "still_open": len(alive),
              "closed_by_peer": len(idle) - len(alive)}
    if args.recheck:
        answered, refailed = run_exchanges(alive, request, args.window,
                                           time.monotonic() + args.timeout)
        result.update(answered_again=len(answered), failed_again=sum(refailed.values()),
                      why=refailed)
        alive = answered
    say(result)
    for sock in idle:
        sock.close()


if __name__ == "__main__":
    main()
