#!/usr/bin/python3
"""A tiny terminal client for trying parley by hand.

    scripts/chat.py --user alice --workspace acme [--channel general]

Gets a token from `build/parleyd token` (same data dir as the server),
says hello, joins or creates the public channel, prints every frame the
server sends, and sends each line you type as a message. Uses Debian's
python3-websockets and python3-msgpack (scripts/install-deps.sh installs
them), so run it with /usr/bin/python3.
"""
import argparse
import asyncio
import subprocess
import sys
import uuid

import msgpack
import websockets


async def main(a):
    tok = subprocess.check_output(
        [a.parleyd, "token", "--user", a.user, "--workspace", a.workspace,
         "--data", a.data]).decode().strip()
    async with websockets.connect(f"ws://{a.server}/ws",
                                  subprotocols=["parley.v1"]) as w:
        rid = 0

        async def call(**req):
            nonlocal rid
            rid += 1
            req["rid"] = rid
            await w.send(msgpack.packb(req))
            while True:
                f = msgpack.unpackb(await w.recv())
                if f.get("t") == "res" and f.get("rid") == rid:
                    return f
                print("<", f)

        hello = await call(op="hello", token=tok)
        if not hello["ok"]:
            sys.exit(f"hello refused: {hello}")
        print(f"hello: {a.user}@{a.workspace}, {len(hello['channels'])} channels")
        lst = await call(op="ch.list")
        ch = next((c["id"] for c in lst["channels"] if c["name"] == a.channel), None)
        if ch is None:
            ch = (await call(op="ch.create", name=a.channel, kind="public"))["ch"]["id"]
        else:
            await call(op="ch.join", ch=ch)
        hist = await call(op="history", ch=ch, limit=20)
        for m in hist["msgs"]:
            print(f"  #{m['seq']} {m['from']}: {m['body']}")
        print(f"in #{a.channel} ({ch}); type a line to send it, Ctrl-D to quit")

        async def reader():
            async for raw in w:
                f = msgpack.unpackb(raw)
                if f.get("t") == "ev":
                    print(f"  #{f['seq']} {f['from']}: {f.get('body', '')}")
                else:
                    print("<", f)

        rtask = asyncio.create_task(reader())
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            await w.send(msgpack.packb({"op": "send", "ch": ch, "body": line.rstrip("\n"),
                                        "cmid": uuid.uuid4().hex}))
        await asyncio.sleep(0.5)  # let the last events arrive
        rtask.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--user", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--channel", default="general")
    p.add_argument("--server", default="127.0.0.1:8080")
    p.add_argument("--data", default="./parley-data")
    p.add_argument("--parleyd", default="build/parleyd")
    asyncio.run(main(p.parse_args()))
