"""dvc push/pull against an S3 remote served by moto_server on 127.0.0.1."""

import os
import shutil
import socket
import subprocess
import time

import pytest

from .conftest import BIN, run

pytestmark = [pytest.mark.integration]
DVC = str(BIN / "dvc")
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def moto_server():
    port = free_port()
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | AWS)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):  # bounded wait: up to 10 s
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("moto_server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def test_push_pull_round_trip(tmp_path, moto_server):
    import boto3

    boto3.client("s3", endpoint_url=moto_server, **{k.lower(): v for k, v in AWS.items() if k != "AWS_DEFAULT_REGION"},
                 region_name="us-east-1").create_bucket(Bucket="supportlm-data")
    repo = tmp_path / "repo"
    repo.mkdir()
    run(["git", "init", "-q"], repo)
    run([DVC, "init", "-q"], repo)
    run([DVC, "remote", "add", "-d", "s3", "s3://supportlm-data/dvcstore"], repo)
    # endpoint + credentials in config.local: never committed
    run([DVC, "remote", "modify", "--local", "s3", "endpointurl", moto_server], repo)
    run([DVC, "remote", "modify", "--local", "s3", "access_key_id", "testing"], repo)
    run([DVC, "remote", "modify", "--local", "s3", "secret_access_key", "testing"], repo)
    data = repo / "data" / "records.jsonl"
    data.parent.mkdir()
    payload = "".join(f'{{"id": {i}, "text": "row {i}"}}\n' for i in range(1000))
    data.write_text(payload)
    run([DVC, "add", "data"], repo)
    push = run([DVC, "push"], repo, env=AWS)
    assert "1 file pushed" in push.stdout or "pushed" in push.stdout
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    run([DVC, "pull"], repo, env=AWS)
    assert data.read_text() == payload
    assert "endpointurl" not in (repo / ".dvc" / "config").read_text()
