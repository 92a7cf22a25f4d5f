"""The `sbc` command: the composition root, the only user of the global reactor.

    sbc run --config FILE [--state-dir DIR]     start the SBC
    sbc check-config FILE                      validate; exit 1 with file:line: key: why
    sbc reload [--config FILE] [--state-dir DIR]  validate, then SIGHUP the running sbc
    sbc route [--config FILE] --from PEER_OR_IP NUMBER   dry-run the routing
    sbc cdr [--state-dir DIR] [filters]        list call detail records
    sbc bans [list | add IP [--seconds N] | lift IP]   the running sbc's bans
    sbc calls [--state-dir DIR] [--format table|json]  the running sbc's calls in progress
    sbc explain --peer P --direction in|out FILE     a peer's header rules on a message
    sbc version
"""

import argparse
import os
import signal
import sys

from . import __version__
from .errors import ConfigError

PIDFILE = "sbc.pid"


def _parser():
    p = argparse.ArgumentParser(prog="sbc", description="SIP trunking gateway and session border controller")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the SBC")
    run.add_argument("--config", "-c", default="/etc/sbc/sbc.toml", help="TOML config file")
    run.add_argument("--state-dir", help="writable directory for certificates and records")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    reload = sub.add_parser("reload", help="validate the config, then make the running sbc re-read it")
    reload.add_argument("--config", "-c", default="/etc/sbc/sbc.toml")
    reload.add_argument("--state-dir", help="where the running sbc keeps sbc.pid")
    route = sub.add_parser("route", help="show how a call would be routed, without placing it")
    route.add_argument("--config", "-c", default="/etc/sbc/sbc.toml")
    route.add_argument("--from", dest="source", required=True, help="peer name or source IP")
    route.add_argument("number", help="the called number as the source would send it")
    from .cdrcli import add_arguments
    cdr = sub.add_parser("cdr", help="list call detail records")
    cdr.add_argument("--config", "-c", default="/etc/sbc/sbc.toml")
    cdr.add_argument("--state-dir", help="where the running sbc keeps cdr.sqlite3")
    add_arguments(cdr)
    from . import banscli, callscli, explain
    bans = sub.add_parser("bans", help="list, add or lift bans of the running sbc")
    calls = sub.add_parser("calls", help="list the running sbc's calls in progress")
    for command, cli in ((bans, banscli), (calls, callscli)):
        command.add_argument("--config", "-c", default="/etc/sbc/sbc.toml")
        command.add_argument("--state-dir", help="where the running sbc keeps control.sock")
        cli.add_arguments(command)
    ex = sub.add_parser("explain", help="show what a peer's header rules do to a sample message")
    ex.add_argument("--config", "-c", default="/etc/sbc/sbc.toml")
    explain.add_arguments(ex)
    sub.add_parser("version", help="print the version")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"sbc {__version__}")
        return 0
    if args.command == "check-config":
        return check_config(args.file)
    if args.command == "reload":
        return reload_running(args)
    if args.command == "route":
        return route(args)
    if args.command == "cdr":
        from .cdrcli import run as cdr_run
        return cdr_run(args, _state_dir(args.state_dir, args.config), sys.stdout)
    if args.command == "bans":
        from .banscli import run as bans_run
        return bans_run(args, _state_dir(args.state_dir, args.config), sys.stdout, sys.stderr)
    if args.command == "calls":
        from .callscli import run as calls_run
        return calls_run(args, _state_dir(args.state_dir, args.config), sys.stdout, sys.stderr)
    if args.command == "explain":
        from .explain import main as explain_main
        config = _load(args.config)
        return 1 if config is None else explain_main(args, config)
    return run(args)


def _load(path, then=""):
    """The config at `path`, or None after printing `file:line: key: why`."""
    from .config import load
    try:
        return load(path)
    except ConfigError as e:
        print(f"{e}{then}", file=sys.stderr)
        return None


def _state_dir(state_dir, config_path):
    """The state dir as `run` resolves it: flag, config, $STATE_DIRECTORY, ./var."""
    if state_dir:
        return state_dir
    from .config import load
    try:
        configured = load(config_path).state_dir
    except ConfigError:
        configured = ""
    return configured or os.environ.get("STATE_DIRECTORY", "").split(":")[0] or "var"


def reload_running(args):
    if _load(args.config, "\nnot reloaded: the running config stays") is None:
        return 1
    pidfile = os.path.join(_state_dir(args.state_dir, args.config), PIDFILE)
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        print(f"cannot signal the running sbc ({pidfile}): {e}", file=sys.stderr)
        return 1
    print(f"sent SIGHUP to sbc (pid {pid})")
    return 0


def route(args):
    from .routing.explain import explain
    config = _load(args.config)
    if config is None:
        return 1
    print(explain(config, args.source, args.number))
    return 0


def check_config(path):
    config = _load(path)
    if config is None:
        return 1
    listeners = ", ".join(f"{x.transport} {x.address}:{x.port}" for x in config.listeners)
    print(f"{path}: ok ({listeners})")
    return 0


def _logging(level):
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                formatEvent, globalLogBeginner)

    def emit(event):
        if event.get("log_namespace") == "log_legacy" and event["log_level"] < LogLevel.warn:
            return  # Twisted's own "X starting on N" chatter; our ready line says it all
        text = formatEvent(event)
        if "log_failure" in event:
            text = f"{text}\n{event['log_failure'].getTraceback()}"
        ns = event.get("log_namespace", "-")
        sys.stdout.write(f"{event['log_level'].name}: [{ns}] {text}\n")
        sys.stdout.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(emit, [predicate])],
                                     redirectStandardIO=False)


def run(args):
    from .config import load
    config = _load(args.config)
    if config is None:
        return 1
    if args.state_dir:
        import dataclasses
        config = dataclasses.replace(config, state_dir=args.state_dir)

    from .net import loop
    loop.install()
    from twisted.internet import reactor
    from twisted.logger import Logger

    from .net import srtp
    from .net.notify import Notifier, start_watchdog
    from .service import calls_text, make_service, tune_gc
    from .sip import message
    from .sip.uri import hostport

    _logging(config.log_level)
    log = Logger(namespace="sbc")
    try:
        top = make_service(config, reactor)
        top.startService()
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bind failure must end the start, loudly
        print(f"cannot start: {e}", file=sys.stderr)
        return 1
    tune_gc()
    sip = top.getServiceNamed("sip")
    listening = ", ".join(f"{t} {hostport(a, p)}" for t, a, p in sip.bound())
    if config.metrics.enabled:
        port = top.getServiceNamed("metrics")._port.getHost()
        listening += f", metrics http://{hostport(port.host, port.port)}/metrics"
    log.info("SIP parser: {parser}; SRTP: {srtp}", parser=message.NATIVE, srtp=srtp.NATIVE)
    log.info("sbc {version} ready: {listening}; state in {state}", version=__version__,
             listening=listening, state=top.state_dir)
    notifier = Notifier.from_environ(os.environ)
    watchdog = []

    def reload():
        notifier.reloading()
        try:
            new = load(args.config)
        except ConfigError as e:
            log.error("reload rejected, running config kept: {error}", error=str(e))
            top.metrics.calls.reloads.labels("failed").inc()
        else:
            top.getServiceNamed("trunking").reload(new)
            log.info("reloaded {path}: new calls use the new routing; listener, TLS and limit "
                     "changes apply at restart", path=new.path)
        notifier.ready(status=f"listening on {listening}")

    trunking = top.getServiceNamed("trunking")
    draining = []

    def shutdown():
        """First signal: drain (no new calls, the rest get drain_timeout to end);
        a second one hangs up what is left at once."""
        if draining:
            trunking.end_now()
            return
        draining.append(True)
        notifier.stopping()
        calls = calls_text(len(top.stack.calls.active))
        if top.stack.calls.active:
            log.info("draining: {calls} in progress, new calls and OPTIONS answered 503; "
                     "what is left is hung up in {timeout} s, or now on a second signal",
                     calls=calls, timeout=config.drain_timeout)
            notifier.status(f"draining {calls}")
        trunking.drain(config.drain_timeout).addCallback(lambda _: stop())

    def stop():
        for call in watchdog:
            if call.running:
                call.stop()
        reactor.stop()

    # Handlers first: systemd may signal as soon as it sees READY=1.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(reload))
    signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(shutdown))
    signal.signal(signal.SIGINT, lambda *_: reactor.callFromThread(shutdown))
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    notifier.ready(status=f"listening on {listening}")
    call = start_watchdog(notifier, reactor, os.environ)
    if call is not None:
        watchdog.append(call)
    pidfile = os.path.join(top.state_dir, PIDFILE)
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        try:
            os.unlink(pidfile)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
