-- POST a 64 KiB body (wrk adds Content-Length); the backends answer with a small 200.
wrk.method = "POST"
wrk.body = string.rep("u", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
