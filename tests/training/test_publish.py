import json

import pytest

from training import publish


def fake_adapter(path):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    (path / "adapter_model.safetensors").write_bytes(b"x")
    (path / "optimizer.pt").write_bytes(b"not copied")
    return path


def test_publish_versions_and_rollback(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(publish, "_call", lambda url, path, payload, tolerate=(): calls.append((path, payload)))
    adapters = tmp_path / "adapters"
    source = fake_adapter(tmp_path / "a")
    first = publish.publish(str(source), "peer", directory=str(adapters), url="http://x")
    second = publish.publish(str(source), "peer", directory=str(adapters), url="http://x")
    assert (first["name"], second["name"]) == ("peer-v1", "peer-v2")
    assert calls[-1] == ("/v1/adapters/load", {"name": "peer-v2", "path": str((adapters / "peer-v2").resolve())})
    assert not (adapters / "peer-v2" / "optimizer.pt").exists()
    result = publish.rollback("peer", directory=str(adapters), url="http://x")
    assert result["now_serving"] == "peer-v1" and calls[-1] == ("/v1/adapters/unload", {"name": "peer-v2"})
    assert sorted(p.name for p in adapters.iterdir()) == ["peer-v1"]
    assert publish.publish(str(source), "peer", directory=str(adapters), url="http://x")["name"] == "peer-v2"


def test_failed_load_leaves_no_adapter(tmp_path, monkeypatch):
    def refuse(url, path, payload, tolerate=()):
        raise RuntimeError("llm_server /v1/adapters/load failed (400)")

    monkeypatch.setattr(publish, "_call", refuse)
    adapters = tmp_path / "adapters"
    with pytest.raises(RuntimeError):
        publish.publish(str(fake_adapter(tmp_path / "a")), "peer", directory=str(adapters), url="http://x")
    assert list(adapters.iterdir()) == []


def test_family_name_checked(tmp_path):
    with pytest.raises(ValueError):
        publish.publish(str(fake_adapter(tmp_path / "a")), "peer-v3", directory=str(tmp_path), load=False)
    with pytest.raises(ValueError):
        publish.publish(str(tmp_path / "a"), "Peer", directory=str(tmp_path), load=False)
