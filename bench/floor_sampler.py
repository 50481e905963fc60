"""The floor under any Python sampler of local QEMU guests: what reading the same
kernel files as virtpolicy's local sampler costs a Python process that does
nothing else (run by bench_cost.py --floor; modes plain and asyncio use the
standard library only, started with -S so that no site packages load).

Usage: python3 [-S] floor_sampler.py INTERVAL READER MODE NAME...

For each guest (its QEMU's pid from libvirt's pid file, its vCPU threads by
the names QEMU gives them): every INTERVAL seconds one ``pread`` of
``/proc/PID/stat`` (user + system time); with READER=1 also each vCPU
thread's ``schedstat`` (run and wait time). The files are opened once and
held, as the daemon holds them. MODE:

- plain: a loop of ``time.sleep``;
- asyncio: each sample in a worker thread of an asyncio loop;
- events: as a daemon that hears libvirt's events must be: an asyncio loop
  registered as libvirt's event loop, one connection subscribed to lifecycle
  events (keepalive every 15 s, as the daemon's), and the samples on a thread
  of their own with its own clock (needs libvirt-python: no -S).

Prints the samples taken when it gets SIGTERM.
"""

import asyncio
import os
import signal
import sys
import threading
import time


def files(name: str, reader: bool) -> list[int]:
    with open(f"/run/libvirt/qemu/{name}.pid") as f:
        pid = int(f.read())
    fds = [os.open(f"/proc/{pid}/stat", os.O_RDONLY)]
    if reader:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("CPU "):
                    fds.append(os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY))
    return fds


def sample(guests: list[list[int]], totals: dict[int, int]) -> None:
    for fds in guests:
        fields = os.pread(fds[0], 4096, 0).rpartition(b")")[2].split()
        totals[fds[0]] = int(fields[11]) + int(fields[12])
        for fd in fds[1:]:
            run, wait, _slices = os.pread(fd, 256, 0).split()
            totals[fd] = int(run) + int(wait)


def main() -> None:
    interval, reader, mode = float(sys.argv[1]), sys.argv[2] == "1", sys.argv[3]
    guests = [files(name, reader) for name in sys.argv[4:]]
    totals: dict[int, int] = {}
    taken = 0

    def done(*_: object) -> None:
        print(taken, flush=True)
        os._exit(0)

    def sample_forever() -> None:
        nonlocal taken
        due = time.monotonic()
        while True:
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))
            sample(guests, totals)
            taken += 1

    signal.signal(signal.SIGTERM, done)
    if mode == "plain":
        sample_forever()

    async def loop() -> None:
        nonlocal taken
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done)
        due = time.monotonic()
        while True:
            due += interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await asyncio.to_thread(sample, guests, totals)
            taken += 1

    async def events() -> None:
        # Here, not at the top: the other modes run without site packages (-S).
        import libvirt  # noqa: PLC0415
        import libvirtaio  # noqa: PLC0415

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done)
        libvirtaio.virEventRegisterAsyncIOImpl()
        conn = libvirt.open("qemu:///system")
        conn.setKeepAlive(15, 3)
        event = libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE
        conn.domainEventRegisterAny(None, event, lambda *_: None, None)
        threading.Thread(target=sample_forever, daemon=True).start()
        await asyncio.Event().wait()

    asyncio.run(loop() if mode == "asyncio" else events())


main()
