-- Every request asks for the connection to be closed after its response, so every request
-- pays a TCP connect and an accept.
wrk.headers["Connection"] = "close"
