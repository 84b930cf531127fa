from __future__ import annotations

import pytest

from vaebench.spec import DEFAULT, Capabilities, RunSpec, parse_value, validate


def fields_of(spec: RunSpec, caps: Capabilities | None = None) -> set[str]:
    return {p.field for p in validate(spec, caps)}


def test_defaults_are_the_seed_configuration() -> None:
    assert (DEFAULT.batch_size, DEFAULT.epochs, DEFAULT.lr, DEFAULT.loader) == (128, 10, 1e-3, "reference")
    assert validate(DEFAULT, Capabilities(logical_cores=2)) == []


def test_key_is_stable_and_tells_specs_apart() -> None:
    assert RunSpec().key() == RunSpec().key()
    assert RunSpec(batch_size=64).key() != RunSpec().key()
    assert len(RunSpec().key()) == 12


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (RunSpec(batch_size=0), "batch_size"),
        (RunSpec(threads=0), "threads"),
        (RunSpec(epochs=0), "epochs"),
        (RunSpec(steps=0), "steps"),
        (RunSpec(workers=-1), "workers"),
        (RunSpec(lr=0.0), "lr"),
        (RunSpec(device="tpu"), "device"),
        (RunSpec(device="cuda:x"), "device"),
        (RunSpec(amp="fp16"), "amp"),
        (RunSpec(amp="fp8"), "amp"),
        (RunSpec(loader="fast"), "loader"),
        (RunSpec(compile="fast"), "compile"),
        (RunSpec(data="imagenet"), "data"),
        (RunSpec(loader="tensor", workers=2), "workers"),
        (RunSpec(pin_memory=True), "pin_memory"),
    ],
)
def test_each_bad_value_is_named(spec: RunSpec, field: str) -> None:
    assert field in fields_of(spec)


def test_cuda_without_cuda_is_refused_only_where_there_is_none() -> None:
    assert fields_of(RunSpec(device="cuda"), Capabilities(cuda_devices=0)) == {"device"}
    assert fields_of(RunSpec(device="cuda:1"), Capabilities(cuda_devices=1)) == {"device"}
    assert fields_of(RunSpec(device="cuda:1", amp="fp16"), Capabilities(cuda_devices=2)) == set()


def test_parse_value_types_and_errors() -> None:
    assert parse_value("batch_size", "256") == 256
    assert parse_value("pin_memory", "on") is True
    assert parse_value("threads", "default") is None
    assert parse_value("lr", "1e-3") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="whole number"):
        parse_value("batch_size", "big")
    with pytest.raises(ValueError, match="unknown run field"):
        parse_value("colour", "red")


def test_from_dict_ignores_extra_columns_and_restores_types() -> None:
    row = {"batch_size": 64.0, "threads": float("nan"), "pin_memory": "false", "real_s": 3.2}
    spec = RunSpec.from_dict(row)
    assert spec.batch_size == 64 and isinstance(spec.batch_size, int)
    assert spec.threads is None and spec.pin_memory is False
    assert spec.label() == "batch_size=64"


def test_fields_added_later_keep_old_keys_at_their_default() -> None:
    import hashlib
    import json

    first_release = {k: v for k, v in RunSpec().to_dict().items() if k not in ("sync", "cuda_graphs")}
    old_key = hashlib.sha1(json.dumps(first_release, sort_keys=True).encode()).hexdigest()[:12]
    assert RunSpec().key() == old_key
    assert RunSpec(sync="epoch").key() != old_key


def test_cuda_graphs_need_cuda_and_sync_epoch() -> None:
    problems = {p.message for p in validate(RunSpec(cuda_graphs=True))}
    assert any("needs a CUDA device" in m for m in problems)
    assert any("needs --sync epoch" in m for m in problems)
    cuda = Capabilities(cuda_devices=1)
    assert validate(RunSpec(device="cuda", sync="epoch", cuda_graphs=True), cuda) == []
    assert any("GradScaler" in p.message for p in validate(RunSpec(device="cuda", sync="epoch", cuda_graphs=True,
                                                                    amp="fp16"), cuda))
    assert [p.field for p in validate(RunSpec(sync="sometimes"))] == ["sync"]
