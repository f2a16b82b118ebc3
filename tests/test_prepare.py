"""`python -m sweeps.prepare`: the prepared files hold exactly the streamed path's tokens (a JSON-lines corpus
and a BPE fast tokenizer trained here, two worker processes), an interrupted preparation resumes to the same
bytes, Stack v2 rows are filled from a real local S3 service standing in for Software Heritage's bucket,
training reads `data.prepared`, and the paper grid's check refuses unprepared hub data in one line."""

import gzip
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from sweeps.data.batches import StreamedRows, eval_batch, training_batches
from sweeps.data.documents import PreparedTokenizer, PretrainedTokenizer, load_tokenizer, open_documents
from sweeps.data.preparation import prepare
from sweeps.data.prepared import MANIFEST, check_prepared, open_split, read_manifest
from sweeps.errors import ConfigError
from sweeps.prepare import main as prepare_main
from sweeps.run.loop import train

from data_helpers import bpe_tokenizer, jsonl_data
from train_helpers import tiny_config, write_corpus

SILENT = {"report": lambda progress, line: None}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepare")
    return write_corpus(root / "corpus", files=2, documents=200), bpe_tokenizer(root / "tokenizer", vocab_size=320)


def test_prepared_files_hold_the_streamed_tokens(corpus, tmp_path):
    paths, tokenizer_dir = corpus
    data = jsonl_data(paths, tokenizer=tokenizer_dir)
    tokenizer = PretrainedTokenizer(tokenizer_dir)
    manifest = prepare(data, tmp_path / "two", workers=2, segment_bytes=2048, **SILENT)
    assert manifest["dtype"] == "uint16" and manifest["tokenizer"]["vocab_hash"] == tokenizer.vocab_hash()
    assert manifest["source"]["data_files"] == paths and manifest["revision"].startswith("local files")
    for split in ("train", "validation"):
        tokens, ends = open_split(tmp_path / "two", split)
        expected = [[*tokenizer.encode(text), tokenizer.eos_token_id] for text in open_documents(data, split)]
        assert tokens.tolist() == [token for document in expected for token in document]
        assert ends.tolist() == np.cumsum([len(document) for document in expected]).tolist()
        assert manifest["splits"][split] == {"tokens": len(tokens), "documents": len(expected)}
    assert 0 < manifest["splits"]["validation"]["documents"] < manifest["splits"]["train"]["documents"]
    assert max(tokenizer.encode(" ".join(open_documents(data, "train")))) > 256  # BPE merges were used

    # One process writes the same bytes as two; the training rows are the stream's rows, permuted.
    prepare(data, tmp_path / "one", workers=1, **SILENT)
    for name in ("train.tokens", "train.ends", "validation.tokens", "validation.ends"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    prepared = training_batches(replace(data, prepared=str(tmp_path / "two")), tokenizer, 16, 8, seed=0)
    n = prepared.order.n
    file_rows = torch.from_numpy(prepared.tokens[:n * 16].astype(np.int64)).view(n, 16)
    streamed = StreamedRows(data, tokenizer, 16, 8)
    assert torch.equal(torch.cat([streamed.batch(step, 0, 8) for step in range(n // 8)]), file_rows[:n // 8 * 8])
    assert torch.equal(prepared.batch(0, 0, 8), file_rows[prepared.order(np.arange(8))])
    assert torch.equal(eval_batch(replace(data, prepared=str(tmp_path / "two")), tokenizer, 16, 4),
                       eval_batch(data, tokenizer, 16, 4))


def test_an_interrupted_preparation_resumes_to_the_same_files(corpus, tmp_path):
    paths, tokenizer_dir = corpus
    data = jsonl_data(paths, tokenizer=tokenizer_dir)
    prepare(data, tmp_path / "reference", workers=1, **SILENT)

    segments = []

    def interrupt(progress, line):
        segments.append(progress.tokens)
        if len(segments) == 5:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        prepare(data, out, workers=1, segment_bytes=2048, commit_interval_s=0, report=interrupt)
    assert not (out / MANIFEST).exists() and (out / "progress.json").exists()
    with pytest.raises(ConfigError, match="unfinished"):
        read_manifest(out)
    with open(out / "train.tokens", "ab") as handle:  # a torn write after the last commit
        handle.write(b"\x07" * 999)
    resumed = []
    prepare(data, out, workers=1, segment_bytes=2048, report=lambda progress, line: resumed.append(progress.tokens))
    assert resumed[0] > segments[3]  # started after the committed segments, not from the top
    for name in ("train.tokens", "train.ends", "validation.tokens", "validation.ends"):
        assert (out / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()
    assert not (out / "progress.json").exists()
    assert prepare(data, out, **SILENT) == read_manifest(out)  # a finished preparation is left as it is
    with pytest.raises(ConfigError, match="other data"):
        prepare(replace(data, holdout_fraction=0.2), out, **SILENT)


def test_the_command_line(corpus, tmp_path, capsys):
    paths, _ = corpus
    out = tmp_path / "prepared"
    assert prepare_main(["data=jsonl", f"data.data_files=[{','.join(paths)}]", f"out={out}", "workers=1"]) == 0
    assert "prepare jsonl: done, train" in capsys.readouterr().err
    assert read_manifest(out)["source"]["tokenizer"] == "bytes"
    for arguments, message in ((["data=jsonl"], "usage: python -m sweeps.prepare data=NAME out=DIR"),
                               (["data=nope", f"out={out}"], "unknown data 'nope'"),
                               (["data=jsonl", f"out={out}", "speed=9"], "'speed=9' is not understood"),
                               (["data=jsonl", f"out={out}"], "data.data_files is required")):
        assert prepare_main(arguments) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error


def test_training_reads_prepared_data_and_the_paper_grid_refuses_unprepared_hub_data(corpus, tmp_path):
    paths, _ = corpus
    prepare(jsonl_data(paths), tmp_path / "prepared", **SILENT)
    overrides = ["data=jsonl", f"data.data_files=[{','.join(paths)}]"]
    config = tiny_config(tmp_path / "run", 3, *overrides, f"data.prepared={tmp_path / 'prepared'}",
                         "data.holdout_fraction=0.1")
    check_prepared(config)
    tokenizer = load_tokenizer(config.data)  # from the manifest: nothing is loaded from the hub
    assert (tokenizer.vocab_size, tokenizer.eos_token_id) == (259, 258) and isinstance(tokenizer, PreparedTokenizer)
    assert train(config)["status"] == "done"

    with pytest.raises(ConfigError) as refused:
        check_prepared(tiny_config(tmp_path / "other", 3, *overrides))
    assert "python -m sweeps.prepare data=jsonl out=DIR" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="prepared from other data"):
        check_prepared(tiny_config(tmp_path / "other", 3, *overrides, f"data.prepared={tmp_path / 'prepared'}"))
    with pytest.raises(ConfigError, match="fewer than eval_sequences"):
        check_prepared(tiny_config(tmp_path / "other", 3, *overrides, f"data.prepared={tmp_path / 'prepared'}",
                                   "data.holdout_fraction=0.1", "eval_sequences=4000"))
    with pytest.raises(ConfigError, match="holds no finished preparation"):
        check_prepared(tiny_config(tmp_path / "other", 3, *overrides, f"data.prepared={tmp_path}"))
    check_prepared(tiny_config(tmp_path / "local", 3))  # the local corpora prepare themselves


@pytest.fixture(scope="module")
def bucket():
    """A real S3 service on localhost (moto's server) standing in for Software Heritage's bucket."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    environment = {"AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                   "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        client = boto3.client("s3")
        client.create_bucket(Bucket="softwareheritage")
        yield client
    server.stop()


def stack_v2_rows(directory, files: int = 40):
    """Hub-shaped rows of The Stack v2 (blob ids, no content) and the contents they name, some latin-1."""
    contents, rows = {}, []
    for index in range(files):
        blob_id = f"{index:040x}"
        text = f"def f{index}(x):\n    return x * {index}  # caf\u00e9 {'loop ' * (index % 7)}\n"
        encoding = "ISO-8859-1" if index % 3 == 0 else "UTF-8"
        contents[blob_id] = (text, encoding)
        rows.append({"blob_id": blob_id, "src_encoding": encoding, "path": f"f{index}.py", "language": "Python"})
    rows.append({"blob_id": "f" * 40, "src_encoding": "UTF-8", "path": "gone.py", "language": "Python"})  # not stored
    path = directory / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path), contents


def test_stack_v2_contents_come_from_the_blob_store(bucket, tmp_path):
    rows_file, contents = stack_v2_rows(tmp_path)
    mirror = tmp_path / "mirror" / "content"
    mirror.mkdir(parents=True)
    for blob_id, (text, encoding) in contents.items():
        compressed = gzip.compress(text.encode(encoding))
        bucket.put_object(Bucket="softwareheritage", Key=f"content/{blob_id}", Body=compressed)
        (mirror / blob_id).write_bytes(compressed)
    data = jsonl_data([rows_file], text_field="content", blob_store="s3://softwareheritage/content",
                      holdout_fraction=0.2)
    manifest = prepare(data, tmp_path / "from-s3", workers=1, **SILENT)
    assert manifest["missing_blobs"] == 1
    texts = [text for text, _ in contents.values()]
    prepared_texts = []
    for split in ("train", "validation"):
        tokens, ends = open_split(tmp_path / "from-s3", split)
        starts = [0, *ends[:-1].tolist()]
        prepared_texts += [bytes(tokens[start:end - 1].astype(np.uint8)).decode()
                           for start, end in zip(starts, ends, strict=True)]
    assert sorted(prepared_texts) == sorted(texts)  # every stored file, decoded with its own encoding
    # The streamed path reads the same store; a local mirror of the bucket gives the same files.
    assert list(open_documents(data, None)) == texts
    prepare(replace(data, blob_store=str(mirror)), tmp_path / "from-mirror", workers=1, **SILENT)
    for name in ("train.tokens", "validation.tokens"):
        assert (tmp_path / "from-mirror" / name).read_bytes() == (tmp_path / "from-s3" / name).read_bytes()
    shutil.rmtree(tmp_path / "mirror")
