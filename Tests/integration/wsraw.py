"""A WebSocket client on a raw socket, for what library clients hide or will not do: the exact
handshake answer, which messages came compressed (RSV1), and bad frames on purpose (RSV1 on a
continuation frame, corrupt deflate data, bombs). Compression follows RFC 7692 with no context
takeover on either side, as Herald negotiates it."""
import os
import socket
import struct
import zlib

TAIL = b"\x00\x00\xff\xff"


def deflate(data, wbits=15):
    """A message body as RFC 7692 §7.2.1 sends it: raw deflate, sync flushed, tail stripped."""
    c = zlib.compressobj(wbits=-wbits)
    body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert body.endswith(TAIL)
    return body[:-4]


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code, self.reason = code, reason


class RawWebSocket:
    def __init__(self, port, path="/ws", offer="permessage-deflate; client_max_window_bits", timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
        if offer is not None:
            request += f"Sec-WebSocket-Extensions: {offer}\r\n"
        self.sock.sendall((request + "\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = {}
        self.header_lines = lines[1:]
        for line in lines[1:]:
            name, value = line.split(":", 1)
            self.headers[name.strip().lower()] = value.strip()
        self.extensions = self.headers.get("sec-websocket-extensions")
        # Inflate with the window the server promised: a longer reach back fails ("invalid
        # distance too far back").
        self.window_bits = 15
        for param in (self.extensions or "").split(";"):
            if param.strip().startswith("server_max_window_bits="):
                self.window_bits = int(param.split("=")[1])
        self.wire_bytes = 0
        self.compressed_messages = 0
        self.plain_messages = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("connection dropped")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self):
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self._read(8))[0]
        assert not b1 & 0x80, "a server frame must not be masked"
        payload = self._read(length)
        self.wire_bytes += length
        return bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, payload

    def recv_message(self):
        """(opcode, bytes, compressed) of the next data message; answers pings; raises Closed."""
        parts, first = [], None
        while True:
            fin, rsv, opcode, payload = self.read_frame()
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode == 0x9:
                self.send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if first is None:
                first = (opcode, rsv)
            else:
                assert opcode == 0 and rsv == 0, "continuation frames carry no opcode or RSV bits"
            parts.append(payload)
            if fin:
                break
        opcode, rsv = first
        data = b"".join(parts)
        assert rsv in (0, 0x40), f"unexpected RSV bits {rsv:#x}"
        if rsv & 0x40:
            assert self.extensions, "RSV1 without a negotiated extension"
            # A fresh inflater for every message: the server takes no context over.
            data = zlib.decompressobj(wbits=-self.window_bits).decompress(data + TAIL)
            self.compressed_messages += 1
        else:
            self.plain_messages += 1
        return opcode, data, bool(rsv & 0x40)

    def recv_lines(self):
        """The frames (lines) of the next text message, and whether it came compressed."""
        opcode, data, compressed = self.recv_message()
        assert opcode == 0x1
        return data.decode().split("\n"), compressed

    def send_frame(self, opcode, payload, fin=True, rsv=0):
        mask = os.urandom(4)
        head = bytes([(0x80 if fin else 0) | rsv | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 65536 else \
            (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (n // 4 + 1))[:n], "big")).to_bytes(n, "big")
        self.sock.sendall(head + mask + masked)

    def send_text(self, text, compress=True):
        data = text.encode() if isinstance(text, str) else text
        if compress:
            self.send_frame(0x1, deflate(data), rsv=0x40)
        else:
            self.send_frame(0x1, data)

    def close_code(self, timeout=10):
        """Reads until the server's close frame; its code."""
        self.sock.settimeout(timeout)
        try:
            while True:
                self.recv_message()
        except Closed as closed:
            return closed.code

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
