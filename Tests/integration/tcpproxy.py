"""A small TCP proxy for fault tests: forwards 127.0.0.1:port to a target and can be told to
delay, pause (hold bytes without closing), cut (close every connection and refuse new ones) and
heal. Threads only; good for a handful of connections."""
import socket
import threading
import time


class TCPProxy:
    def __init__(self, target_port, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.pairs = []
        self.cut_now = False
        self.paused = threading.Event()
        self.paused.set()  # set = flowing
        self.delay = 0.0
        self.connections_cut = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    # Controls.
    def cut(self):
        """Closes every proxied connection and refuses new ones until heal()."""
        with self.lock:
            self.cut_now = True
            pairs, self.pairs = self.pairs, []
        for a, b in pairs:
            self.connections_cut += 1
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def pause(self):
        """Stops moving bytes (both ways) without closing anything."""
        self.paused.clear()

    def heal(self):
        with self.lock:
            self.cut_now = False
        self.paused.set()

    def set_delay(self, seconds):
        self.delay = seconds

    def close(self):
        self.closed = True
        self.cut()
        self.listener.close()

    # Plumbing.
    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                refuse = self.cut_now
            if refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.paused.wait()
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
