"""``virtpolicy serve``: the daemon a host runs."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

import click
import uvicorn

from virtpolicy import loopguard
from virtpolicy.api import server
from virtpolicy.api.server import raise_descriptor_limit
from virtpolicy.cli import logs
from virtpolicy.cli.app import Seconds, cli, parse_labels
from virtpolicy.config import load_serve_settings
from virtpolicy.engine.daemon.controller import Controller
from virtpolicy.engine.daemon.settings import ControllerSettings
from virtpolicy.engine.runtime import aio
from virtpolicy.hypervisor.connection import LibvirtConnection
from virtpolicy.hypervisor.events import use_asyncio
from virtpolicy.hypervisor.migration import published_uri
from virtpolicy.store import masked_db, open_store

log = logging.getLogger(__name__)

#: New objects between the garbage collector's young-generation passes.
GC_YOUNG = 20_000


@cli.command("serve")
@click.option("--config", "config_file", metavar="FILE", help="TOML file with these same settings.")
@click.option(
    "--connect",
    metavar="URI",
    help="libvirt URI [default: $LIBVIRT_DEFAULT_URI, else qemu:///system]",
)
@click.option(
    "--mode",
    type=click.Choice(["enforce", "report"]),
    help="Put drift back, or only report it [enforce].",
)
@click.option(
    "--reconcile-interval", type=Seconds(), metavar="SECONDS", help="Periodic pass interval [300]."
)
@click.option(
    "--sample-interval",
    type=Seconds(),
    metavar="SECONDS",
    help="Utilization sample interval, at least 1 [5].",
)
@click.option(
    "--history", type=Seconds(), metavar="SECONDS", help="Utilization history kept [3600]."
)
@click.option(
    "--tuner",
    "tuners",
    metavar="NAME[,NAME...]",
    help="Tuners to run (see `virtpolicy tuners`) [static].",
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=None,
    help="Tuners decide and log, and change nothing.",
)
@click.option(
    "--set",
    "tuner_settings",
    multiple=True,
    metavar="KEY=NUMBER",
    help="A tuner setting, e.g. threshold=15 or dwell=120.",
)
@click.option(
    "--run-dir", metavar="DIR", help="Where the API sockets go [/run/virtpolicy for root]."
)
@click.option(
    "--autostart/--no-autostart",
    default=None,
    help="At start, start the guests whose policy says autostart, in order [yes].",
)
@click.option(
    "--exec-dir",
    metavar="DIR",
    help="Run exec: conditions only from DIR [unset: exec: conditions are refused].",
)
@click.option("--exec-user", metavar="USER", help="Run exec: conditions as USER [nobody].")
@click.option(
    "--memory-target",
    type=float,
    metavar="PERCENT",
    help="The memory tuner's aim: this much of the host's memory in use [80].",
)
@click.option(
    "--memory-ksm",
    type=click.Choice(["off", "auto"]),
    help="auto: KSM runs while the host needs memory [off: left as it is].",
)
@click.option(
    "--host", "host_name", metavar="NAME", help="This host's name in the fleet [the hostname]."
)
@click.option(
    "--heartbeat",
    type=Seconds(),
    metavar="SECONDS",
    help="Heartbeat into the store every [2 on PostgreSQL, 60 on SQLite].",
)
@click.option(
    "--reserved",
    metavar="CPUSET",
    help="Host CPUs kept for the host: no guest runs there once placement is in play.",
)
@click.option(
    "--migration-uri",
    metavar="URI",
    help="How other hosts' libvirtd reach this one to migrate guests here, peer to peer.",
)
@click.option(
    "--migration-stream",
    metavar="URI",
    help="Where migration streams come in: tcp://ADDRESS[:PORT] or unix:///PATH.",
)
@click.option("--listen", metavar="HOST:PORT", help="Also serve the API over TCP (needs TLS).")
@click.option(
    "--request-timeout",
    type=Seconds(),
    metavar="SECONDS",
    help="Close a connection whose request is not all in within [10].",
)
@click.option("--tls-cert", metavar="FILE", help="TLS certificate (PEM) for --listen.")
@click.option("--tls-key", metavar="FILE", help="TLS private key (PEM) for --listen.")
@click.pass_context
def serve(
    ctx: click.Context,
    config_file: str | None,
    connect: str | None,
    mode: str | None,
    reconcile_interval: float | None,
    sample_interval: float | None,
    history: float | None,
    tuners: str | None,
    dry_run: bool | None,
    tuner_settings: tuple[str, ...],
    run_dir: str | None,
    autostart: bool | None,
    exec_dir: str | None,
    exec_user: str | None,
    memory_target: float | None,
    memory_ksm: str | None,
    host_name: str | None,
    heartbeat: float | None,
    reserved: str | None,
    migration_uri: str | None,
    migration_stream: str | None,
    listen: str | None,
    request_timeout: float | None,
    tls_cert: str | None,
    tls_key: str | None,
) -> None:
    """Enforce every stored policy on the guests of a libvirt connection, and keep
    enforcing it as guests start, change and drift."""
    db = ctx.find_root().params.get("db")
    settings = load_serve_settings(
        config_file,
        {
            "connect": connect,
            "db": db,
            "mode": mode,
            "reconcile_interval": reconcile_interval,
            "sample_interval": sample_interval,
            "history": history,
            "tuners": tuners,
            "dry_run": dry_run,
            "tuner_settings": parse_labels(tuner_settings, "--set") or None,
            "run_dir": run_dir,
            "autostart": autostart,
            "host": host_name,
            "heartbeat": heartbeat,
            "reserved": reserved,
            "listen": listen,
            "request_timeout": request_timeout,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
            "conditions": {k: v for k, v in (("exec_dir", exec_dir), ("exec_user", exec_user)) if v}
            or None,
            "memory": {
                k: v for k, v in (("target", memory_target), ("ksm", memory_ksm)) if v is not None
            }
            or None,
            "migration": {
                k: v for k, v in (("uri", migration_uri), ("stream", migration_stream)) if v
            }
            or None,
        },
    )
    verbose = ctx.find_root().params.get("verbose")
    logs.configure(logging.DEBUG if verbose else logging.INFO)
    raise_descriptor_limit()
    store = open_store(settings.db)
    hypervisor = LibvirtConnection(settings.connect)
    if loopguard.enabled():
        store = loopguard.guarded(store, "store")
        hypervisor = loopguard.guarded(hypervisor, "hypervisor")
    controller = Controller(
        store,
        hypervisor,
        ControllerSettings(
            uri=settings.connect,
            mode=settings.mode,
            reconcile_interval=settings.reconcile_interval,
            sample_interval=settings.sample_interval,
            history=settings.history,
            tuners=settings.tuners,
            dry_run=settings.dry_run,
            # The [memory] table's target, unless --set gives the tuner another.
            tuner_settings={"memory.target": settings.memory.target, **settings.tuner_settings},
            ksm=settings.memory.ksm,
            ksm_dir=settings.memory.ksm_dir,
            autostart=settings.autostart,
            exec_dir=settings.conditions.exec_dir,
            exec_user=settings.conditions.exec_user,
            host_name=settings.host,
            heartbeat=settings.heartbeat_s,
            reserved=settings.reserved,
            migration_uri=published_uri(settings.connect, settings.migration.uri),
            migration_stream=settings.migration.stream,
        ),
    )
    log.info(
        "serving: host=%s connect=%s db=%s mode=%s interval=%ss sample=%ss tuners=%s%s",
        settings.host,
        settings.connect,
        masked_db(settings.db),
        settings.mode,
        settings.reconcile_interval,
        settings.sample_interval,
        ",".join(settings.tuners),
        " (dry run)" if settings.dry_run else "",
    )
    # A client may stop the daemon as soon as it sees its sockets, before the
    # loop's own handlers are in place: such a signal is held until then.
    held: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: held.append(signum))
    apis = server.servers(
        store,
        controller,
        settings.run_dir,
        settings.listen,
        settings.tls_cert,
        settings.tls_key,
        request_timeout=settings.request_timeout,
        socket_group=settings.socket_group,
    )
    log.info(
        "API on %s/{%s,%s,%s}",
        settings.run_dir,
        server.RW_SOCKET,
        server.RO_SOCKET,
        server.HOOK_SOCKET,
    )
    if settings.listen:
        log.info("API on https://%s (bearer tokens)", settings.listen)
    aio.run(_run(controller, apis, held), workers=aio.WORKER_THREADS)
    store.close()


async def _run(controller: Controller, apis: list[uvicorn.Server], held: list[int]) -> None:
    loop = asyncio.get_running_loop()
    use_asyncio(loop)  # libvirt's events through this loop, before any connection

    def stop() -> None:
        controller.stop()
        for api in apis:
            api.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    if held:  # a stop asked for while starting: stop once running
        loop.call_soon(stop)
    # What start-up made (modules, the app, settings: some 100,000 objects) lives
    # as long as the daemon: frozen, the collector's full passes skip it (a pass
    # over it costs some 50 ms here). Once stopping is the daemon's own.
    gc.collect()
    gc.freeze()
    # Nearly every object made after start-up dies by its count of references
    # (a sample's counters and rates, a request's); a young-generation pass
    # every 700 new objects (the default) walked each sample's some 1,500 live
    # ones a few times over, and made the full passes come more often.
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
    tasks = [asyncio.create_task(server.serve(api)) for api in apis]
    await controller.run()
    stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")
