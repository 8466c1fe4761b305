#!/usr/bin/env python3
"""A Clusterflux client in another language, from the contract alone.

Usage: client.py HOST:PORT

Generates Python stubs from proto/clusterflux/v1/clusterflux.proto with
grpc_tools.protoc into a temporary directory, then, against a running
cflux-manager: registers a node, heartbeats, opens WatchMeta, pushes with
PushMeta and checks the watch receives each pushed version, checks a
compare-and-swap conflict, follows the node list with WatchNodes (at once,
then the deregistration), an INVALID_ARGUMENT and NOT_FOUND, and that server
reflection describes the service (what `grpcurl list` relies on).

Exits 0 when every check passes; prints each step as it goes.
"""

import os
import queue
import sys
import tempfile
import threading

import grpc
import grpc_tools
from grpc_tools import protoc

DEADLINE = 10  # seconds, for anything awaited
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO_ROOT = os.path.join(REPO, "proto")
SERVICE = "clusterflux.v1.Clusterflux"


def meta_data(database):
    """A minimal valid InfluxDB `meta.Data` holding one database, written by
    hand (the manager accepts only valid ones): the required counters as
    zero varints around one DatabaseInfo{Name, DefaultRetentionPolicy}."""
    name = database.encode()
    db = b"\x0a" + bytes([len(name)]) + name + b"\x12\x07autogen"
    head = b"\x08\x00\x10\x00\x18\x00"  # Term, Index, ClusterID
    tail = b"\x38\x00\x40\x00\x48\x00"  # MaxNodeID, MaxShardGroupID, MaxShardID
    return head + b"\x2a" + bytes([len(db)]) + db + tail


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def generate_stubs(out_dir):
    """Compiles the contract to Python modules in out_dir and imports them."""
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            "clusterflux/v1/clusterflux.proto",
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed with {rc}")
    sys.path.insert(0, out_dir)
    from clusterflux.v1 import clusterflux_pb2, clusterflux_pb2_grpc

    return clusterflux_pb2, clusterflux_pb2_grpc


def expect_error(code, what, call, *args):
    try:
        call(*args, timeout=DEADLINE)
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {code.name} ({e.details()})")
        return
    raise AssertionError(f"{what}: expected {code.name}, the call succeeded")


def check_reflection(channel):
    """Lists and resolves the service through server reflection."""
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    db = ProtoReflectionDescriptorDatabase(channel)
    services = db.get_services()
    check(SERVICE in services, f"reflection lists {SERVICE} (among {list(services)})")
    service = DescriptorPool(db).FindServiceByName(SERVICE)
    methods = sorted(m.name for m in service.methods)
    expected = sorted(
        [
            "Register",
            "Heartbeat",
            "Deregister",
            "ListNodes",
            "WatchNodes",
            "ListClusters",
            "GetMeta",
            "WatchMeta",
            "PushMeta",
            "ListHistory",
            "GetVersion",
            "RestoreVersion",
            "DeleteCluster",
        ]
    )
    check(methods == expected, f"reflection describes every RPC: {methods}")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    addr = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix="cflux-py-") as out:
        pb, rpc = generate_stubs(out)
        print(f"stubs generated from {PROTO_ROOT}", flush=True)

        channel = grpc.insecure_channel(addr)
        grpc.channel_ready_future(channel).result(timeout=DEADLINE)
        stub = rpc.ClusterfluxStub(channel)
        cluster = f"python-{os.getpid()}"

        # Register and heartbeat.
        reg = stub.Register(
            pb.RegisterRequest(
                cluster=cluster,
                hostname="python-node",
                ips=["10.1.0.1"],
                http_addr="10.1.0.1:8086",
                version="python",
            ),
            timeout=DEADLINE,
        )
        check(reg.node_id != "", f"registered as {reg.node_id}")
        check(reg.bind_address == "127.0.0.1", f"bind_address {reg.bind_address}")
        check(reg.heartbeat_interval_ms > 0 and reg.ttl_ms > reg.heartbeat_interval_ms,
              f"timings {reg.heartbeat_interval_ms}ms / {reg.ttl_ms}ms")
        stub.Heartbeat(pb.HeartbeatRequest(cluster=cluster, node_id=reg.node_id), timeout=DEADLINE)
        nodes = stub.ListNodes(pb.ListNodesRequest(cluster=cluster), timeout=DEADLINE).nodes
        check(
            [(n.node_id, n.hostname, n.alive) for n in nodes] == [(reg.node_id, "python-node", True)],
            "ListNodes shows the node alive",
        )
        snapshot = stub.GetMeta(pb.GetMetaRequest(cluster=cluster), timeout=DEADLINE)
        check(snapshot.version == 0 and snapshot.data == b"", "a fresh catalog is version 0")

        # Watch, then push: the watch receives every pushed version.
        received = queue.Queue()
        watch = stub.WatchMeta(pb.WatchMetaRequest(cluster=cluster, version=0))

        def consume():
            try:
                for s in watch:
                    received.put(s)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.CANCELLED:
                    received.put(e)

        reader = threading.Thread(target=consume, daemon=True)
        reader.start()
        version = 0
        for data in [meta_data("python1"), meta_data("python2")]:
            push = stub.PushMeta(
                pb.PushMetaRequest(
                    cluster=cluster, expected_version=version, data=data, node_id=reg.node_id
                ),
                timeout=DEADLINE,
            )
            check(push.WhichOneof("result") == "accepted_version", f"push on {version} accepted")
            check(push.accepted_version == version + 1, f"accepted as {push.accepted_version}")
            version = push.accepted_version
            got = received.get(timeout=DEADLINE)
            if isinstance(got, Exception):
                raise got
            check(
                (got.cluster, got.version, got.data) == (cluster, version, data),
                f"the watch received version {got.version}",
            )

        # A stale push conflicts and carries the current snapshot.
        push = stub.PushMeta(
            pb.PushMetaRequest(cluster=cluster, expected_version=0, data=meta_data("stale")),
            timeout=DEADLINE,
        )
        check(push.WhichOneof("result") == "conflict", "a stale push conflicts")
        check(
            (push.conflict.version, push.conflict.data) == (2, meta_data("python2")),
            "the conflict carries the current snapshot",
        )
        check(
            stub.GetMeta(pb.GetMetaRequest(cluster=cluster), timeout=DEADLINE).version == 2,
            "the conflict changed nothing",
        )
        watch.cancel()
        reader.join(timeout=DEADLINE)
        check(not reader.is_alive(), "the watch ends when the client leaves")

        # The node list at once, then again on every change of membership.
        nodes_watch = stub.WatchNodes(pb.WatchNodesRequest(cluster=cluster), timeout=DEADLINE)
        first = next(nodes_watch)
        check(
            [(n.node_id, n.alive) for n in first.nodes] == [(reg.node_id, True)],
            "WatchNodes sends the node list at once",
        )

        # Errors are status codes.
        expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "a cluster name with a control character",
            stub.GetMeta,
            pb.GetMetaRequest(cluster="bad\nname"),
        )
        expect_error(
            grpc.StatusCode.NOT_FOUND,
            "a heartbeat of an unknown node",
            stub.Heartbeat,
            pb.HeartbeatRequest(cluster=cluster, node_id="nobody"),
        )
        stub.Deregister(pb.DeregisterRequest(cluster=cluster, node_id=reg.node_id), timeout=DEADLINE)
        check(len(next(nodes_watch).nodes) == 0, "WatchNodes sends the deregistration")
        nodes_watch.cancel()
        expect_error(
            grpc.StatusCode.NOT_FOUND,
            "a second deregistration",
            stub.Deregister,
            pb.DeregisterRequest(cluster=cluster, node_id=reg.node_id),
        )

        check_reflection(channel)
        channel.close()
    print("python client: all checks passed", flush=True)


if __name__ == "__main__":
    main()
