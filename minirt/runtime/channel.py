"""A one-way pipe from the container's set-up code back to the parent.

The child writes JSON lines: trace steps, its pid, or the error that stopped
it. The write end is close-on-exec, so when the command finally starts the
pipe closes by itself; the parent reading end-of-file with no error means
"exec succeeded". (The same trick as runc's init pipe and Go's os/exec.)
"""

import json
import os


class Channel:
    def __init__(self):
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    # --- child side ----------------------------------------------------------
    def send(self, **message) -> None:
        data = (json.dumps(message) + "\n").encode()
        os.write(self.write_fd, data)

    def send_step(self, step) -> None:
        self.send(step=step.to_dict())

    def close_read(self) -> None:
        os.close(self.read_fd)

    # --- parent side ---------------------------------------------------------
    def close_write(self) -> None:
        os.close(self.write_fd)

    def receive_all(self) -> list[dict]:
        """Read messages until every writer has exec'd or exited."""
        chunks = []
        while chunk := os.read(self.read_fd, 65536):
            chunks.append(chunk)
        os.close(self.read_fd)
        return [json.loads(line) for line in b"".join(chunks).splitlines() if line.strip()]
