"""A one-way pipe from the container's set-up code back to the parent.

The child writes messages (small dicts): trace steps, its pid, or the error
that stopped it. The write end is close-on-exec, so when the command finally
starts the pipe closes by itself; the parent reading end-of-file with no error
means "exec succeeded". (The same trick as runc's init pipe and Go's os/exec.)

Each message is a 4-byte length and the dict in Python's ``marshal`` format,
which is built into the interpreter: the json module would pull in the regex
engine, milliseconds every container start would pay.
"""

import marshal
import os
import struct


class Channel:
    def __init__(self):
        self.read_fd, self.write_fd = os.pipe2(os.O_CLOEXEC)

    # --- child side ----------------------------------------------------------
    def send(self, **message) -> None:
        data = marshal.dumps(message)
        os.write(self.write_fd, struct.pack("<I", len(data)) + data)

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
        data, messages, at = b"".join(chunks), [], 0
        while at + 4 <= len(data):
            size = struct.unpack_from("<I", data, at)[0]
            messages.append(marshal.loads(data[at + 4:at + 4 + size]))
            at += 4 + size
        return messages
