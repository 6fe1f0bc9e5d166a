"""The long-table reader: codes and decode tables, the input rules, and invariants (hypothesis)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robust_al.crowd.longtable import AnnotationError, read_annotations, read_truth


def write(path, text: str):
    path.write_text(text)
    return path


def as_csv(rows, header=("task", "worker", "label")) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def decoded(table) -> set:
    a = table.annotations
    return {(table.tasks[t], table.workers[w], table.classes[c]) for t, w, c in a.itertuples(index=False)}


def test_zheng_headers_integer_order_and_decode(tmp_path):
    p = write(tmp_path / "a.csv", "question,worker,answer\n10,w2,1\n9,w1,0\n 10 ,w1, 3 \n2,w2,3.0\n")
    t = read_annotations(p)
    assert list(t.tasks) == ["2", "9", "10"]  # numeric order of integer ids, decoded as the file's text
    assert list(t.workers) == ["w1", "w2"] and list(t.classes) == [0, 1, 3]  # 3 and 3.0 are one class
    assert t.integer_labels and t.n_classes == 3
    assert decoded(t) == {("10", "w2", 1), ("9", "w1", 0), ("10", "w1", 3), ("2", "w2", 3)}
    assert t.annotations.dtypes.tolist() == [np.int64] * 3


def test_string_ids_and_labels_and_mixed_id_types(tmp_path):
    t = read_annotations(write(tmp_path / "a.csv", "item,worker,label\nb,7,dog\n1,x,cat\nb,x,dog\n"))
    assert list(t.tasks) == ["1", "b"] and list(t.workers) == ["7", "x"] and list(t.classes) == ["cat", "dog"]
    assert not t.integer_labels
    df = pd.DataFrame({"task": [1, "1", "a", 2], "worker": ["w", "v", 3, 3], "label": [0, 1, 1, 0]})
    t = read_annotations(df)  # 1 and "1" are one task: ids are compared as text; decoded to the first value
    assert len(t.tasks) == 3 and t.tasks[0] == 1 and t.tasks[2] == "a"
    assert list(t.classes) == [0, 1]


def test_repeated_answers_count_once_conflicts_are_refused(tmp_path):
    t = read_annotations(write(tmp_path / "a.csv", "task,worker,label\n1,a,0\n2,a,1\n1,a,0\n1,b,1\n"))
    assert t.repeated == 1 and len(t.annotations) == 3
    with pytest.raises(AnnotationError, match=r"a\.csv: line 5: worker 'a' answers task '1' with '1', but line 2 "
                                              r"says '0'"):
        read_annotations(write(tmp_path / "a.csv", "task,worker,label\n1,a,0\n2,a,1\n1,a,0\n1,a,1\n"))


@pytest.mark.parametrize("text, line, words", [
    ("task,worker\n1,a\n", 1, "no label column"),
    ("tsk,worker,label\n1,a,0\n", 1, "no task column"),
    ("task,worker,label\n1,a,0\n,b,1\n", 3, "empty task id"),
    ("task,worker,label\n1,a,0\n\n2,  ,1\n", 4, "empty worker id"),  # the blank line is skipped, still counted
    ("task,worker,label\n1,a,0\n2,b,\n", 3, "empty label"),
    ("task,worker,label\n1,a,0\n2,b,-1\n", 3, "'-1' is a negative integer"),
    ("task,worker,label\n1,a,cat\n2,b,-1\n", 3, "'-1' is a negative integer"),
    ("task,worker,label\n1,a,0\n2,b,2.5\n", 3, "'2.5' is not an integer"),
    ("task,worker,label\n1,a,cat\n2,b,nan\n", 3, "'nan' is not a class"),
    ("task,worker,label\n1,a,1\n2,b,inf\n", 3, "'inf' is not a class"),
    ('task,worker,label\n"x\ny",a,0\n2,b,-3\n', 4, "negative"),  # a quoted newline counts as a line
    ("task,worker,label\n1,a,0\n2,b,1,9\n", 3, "4 fields; expected 3"),
])
def test_each_rule_names_the_file_and_line(tmp_path, text, line, words):
    p = write(tmp_path / "bad.csv", text)
    with pytest.raises(AnnotationError) as e:
        read_annotations(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: line {line}: ") and words in msg and "\n" not in msg


def test_empty_file_no_rows_and_non_utf8(tmp_path):
    for text, words in [("", "empty file"), ("task,worker,label\n\n", "no answers")]:
        with pytest.raises(AnnotationError, match=words):
            read_annotations(write(tmp_path / "e.csv", text))
    (tmp_path / "b.csv").write_bytes(b"task,worker,label\n1,a,0\n2,b,\xff\n")
    with pytest.raises(AnnotationError, match=r"b\.csv: line 3: byte 0xff is not UTF-8"):
        read_annotations(tmp_path / "b.csv")


def test_dataframe_rows_are_named_by_position_and_index():
    df = pd.DataFrame({"task": [1, None], "worker": ["a", "b"], "label": [0, 1]}, index=[10, 11])
    with pytest.raises(AnnotationError, match=r"annotations DataFrame: row 1 \(index 11\): empty task id"):
        read_annotations(df)


def test_truth_rules(tmp_path):
    t = read_annotations(write(tmp_path / "a.csv", "task,worker,label\n1,a,0\n2,a,1\n3,b,1\n"))
    tr = read_truth(write(tmp_path / "t.csv", "question,truth\n1,0\n2,7\n99,1\n3,1\n3,1.0\n"), t)
    assert tr.labels.to_dict() == {0: 0, 1: -1, 2: 1}  # 7: no worker gave it, scored as wrong
    assert (tr.ignored, tr.unseen) == (1, 1)
    for text, line, words in [("task,truth\n1,0\n1,1\n", 3, "task '1' has truth '1', but line 2 says '0'"),
                              ("task,truth\n1,cat\n", 2, "truth 'cat' is not an integer"),
                              ("task,truth\n1,-1\n", 2, "negative"),
                              ("task,gold\n1,\n", 2, "empty truth"),
                              ("task,answerz\n1,0\n", 1, "no truth column")]:
        p = write(tmp_path / "t.csv", text)
        with pytest.raises(AnnotationError) as e:
            read_truth(p, t)
        assert str(e.value).startswith(f"{p}: line {line}: ") and words in str(e.value)
    s = read_annotations(write(tmp_path / "s.csv", "task,worker,label\n1,a,cat\n2,a,dog\n"))
    tr = read_truth(write(tmp_path / "t.csv", "task,label\n1,cat\n2,bird\n"), s)
    assert tr.labels.to_dict() == {0: 0, 1: -1} and tr.unseen == 1


# -- invariants --------------------------------------------------------------------------------------------
ids = st.one_of(st.integers(0, 500).map(str), st.integers(0, 50).map(lambda i: f"0{i}"),
                st.text("abcXY_-:é 0123", min_size=1, max_size=6).filter(lambda s: s.strip() != ""))
int_labels = st.integers(0, 6)
str_labels = st.sampled_from(["cat", "dog", "bird", "3", "Z z"])


@st.composite
def crowds(draw):
    labels = draw(st.sampled_from([int_labels, str_labels]))
    pairs = draw(st.dictionaries(st.tuples(ids, ids), labels, min_size=1, max_size=40))
    return [(t, w, y) for (t, w), y in pairs.items()]


def key(row):
    t, w, _y = row
    return t.strip(), w.strip()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crowds(), st.randoms(use_true_random=False))
def test_round_trip_and_row_order_does_not_matter(tmp_path, rows, rnd):
    # rows whose ids differ only by surrounding spaces are one (task, worker): keep one of each
    unique = list({key(r): r for r in rows}.values())
    p = write(tmp_path / "r.csv", as_csv(unique))
    t = read_annotations(p)
    # labels are integers when every one reads as one (the string labels may all be "3")
    value = (lambda y: int(str(y))) if t.integer_labels else (lambda y: str(y).strip())
    assert t.integer_labels == all(str(y).isdigit() for _, _, y in unique)
    want = {(a.strip(), b.strip(), value(y)) for a, b, y in unique}
    assert decoded(t) == want
    assert sorted(set(t.annotations["task"])) == list(range(len(t.tasks)))
    assert sorted(set(t.annotations["worker"])) == list(range(len(t.workers)))
    assert sorted(set(t.annotations["label"])) == list(range(t.n_classes))
    shuffled = unique + [unique[0]] * 2  # a repeated identical answer counts once
    rnd.shuffle(shuffled)
    u = read_annotations(write(tmp_path / "s.csv", as_csv(shuffled)))
    pd.testing.assert_frame_equal(u.annotations, t.annotations)
    for a, b in [(u.tasks, t.tasks), (u.workers, t.workers), (u.classes, t.classes)]:
        assert list(a) == list(b)
