"""Drives klipper/panda_bridge.py inside the Klipper stand-in
(tests/klipper/klipper_standin.py) as a long-running process, so the fault
suite can kill it, hang it, restart it, or kill the bridge under it.

Usage: python3 klipper_driver.py SOCKET_PATH
Commands on stdin, one per line; every answer is one JSON line on stdout:
  gcode <script>     run G-code (SET_HEATER_TEMPERATURE, TURN_OFF_HEATERS...)
  status             the extra's get_status, the heater's target, klippy's
                     state, whether the extra heartbeats ready, the console
  restart            RESTART: klippy:disconnect, then a fresh printer connects
  firmware_restart   FIRMWARE_RESTART: klippy:firmware_restart and
                     klippy:disconnect, then a fresh printer connects
  shutdown <msg>     an emergency shutdown (klippy:shutdown)
  hang <seconds>     klippy hangs: the reactor dispatches nothing meanwhile
  quit               disconnect and exit
"""
import json, logging, os, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'klipper'))
import klipper_standin  # noqa: E402

VERIFY_HEATER = """
[verify_heater panda_breath]
hysteresis: 5
heating_gain: 1
check_gain_time: 600
max_error: 1800
"""


def say(**message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Driver:
    def __init__(self, path):
        self.path = path
        self.printer = None
        self.pending = []
        self.partial = b''
        self.hang_until = None
        self.quit = False
        self.console_seen = 0
        self.generation = 0
        self.boot()

    def boot(self):
        self.generation += 1
        self.printer = klipper_standin.Printer(
            klipper_standin.panda_bridge_config(self.path, extra=VERIFY_HEATER))
        self.printer.connect()
        reactor = self.printer.get_reactor()
        self.stdin_handle = reactor.register_fd(sys.stdin.fileno(),
                                                self.read_stdin)
        say(event="ready", generation=self.generation)

    def read_stdin(self, eventtime):
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            self.pending.append('quit')
            return
        lines = (self.partial + data).split(b'\n')
        self.partial = lines.pop()
        self.pending.extend(line.decode().strip() for line in lines)

    def heater(self):
        return self.printer.lookup_object('heaters').lookup_heater(
            'panda_breath')

    def status(self):
        eventtime = self.printer.get_reactor().monotonic()
        extra = self.printer.lookup_object('panda_bridge')
        gcode = self.printer.lookup_object('gcode')
        console = gcode.output[self.console_seen:]
        self.console_seen = len(gcode.output)
        return {'extra': extra.get_status(eventtime),
                'target': self.heater().target_temp,
                'shutdown': self.printer.is_shutdown(),
                'state': self.printer.get_state_message()[1],
                'ready': extra._is_ready(),
                'generation': self.generation,
                'console': console}

    def stop_printer(self, firmware):
        reactor = self.printer.get_reactor()
        reactor.unregister_fd(self.stdin_handle)
        if firmware:
            self.printer.send_event("klippy:firmware_restart")
        self.printer.disconnect()

    def run_command(self, line):
        command, _, arg = line.partition(' ')
        if command == 'gcode':
            try:
                self.printer.lookup_object('gcode').run_script(arg)
                say(ok=True)
            except Exception as e:
                say(ok=False, error=str(e))
        elif command == 'status':
            say(status=self.status())
        elif command in ('restart', 'firmware_restart'):
            self.stop_printer(command == 'firmware_restart')
            say(ok=True, stopped=self.generation)
            self.boot()
        elif command == 'shutdown':
            self.printer.invoke_shutdown(arg or "test shutdown")
            say(ok=True)
        elif command == 'hang':
            self.hang_until = time.monotonic() + float(arg)
            self.printer.get_reactor().stopped = True
            say(ok=True, hanging=float(arg))
        elif command == 'quit':
            self.stop_printer(False)
            self.quit = True
            say(ok=True, bye=True)
        elif command:
            say(ok=False, error="unknown command %r" % (command,))

    def run(self):
        while not self.quit:
            reactor = self.printer.get_reactor()
            reactor.pause(reactor.monotonic() + .02)
            if self.hang_until is not None and time.monotonic() >= self.hang_until:
                self.hang_until = None
                reactor.stopped = False
                say(event="resumed")
            while self.pending and not self.quit and self.hang_until is None:
                self.run_command(self.pending.pop(0))


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="klippy %(levelname)s %(message)s")
    Driver(sys.argv[1]).run()


if __name__ == '__main__':
    main()
