"""Chunking with overlap that never cuts a word, and exact cosine top-k retrieval with replace and remove."""
from __future__ import annotations

import numpy as np
import pytest

from shared.whatsapp.knowledge import Chunk, VectorIndex, chunk_text, count_tokens, packed_vectors, unpacked_vectors


def numbered_words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def words_of(chunk: Chunk) -> list[str]:
    return chunk.text.split()


def test_tokens_are_words_and_punctuation_marks():
    assert count_tokens("Hello, world! 2-bedroom") == 7  # Hello , world ! 2 - bedroom


def test_chunks_hold_at_most_size_tokens_and_repeat_overlap_tokens():
    chunks = chunk_text(numbered_words(100), size=30, overlap=10)
    assert [c.tokens for c in chunks] == [30, 30, 30, 30, 20]  # starts at 0, 20, 40, 60, 80
    assert words_of(chunks[0]) == [f"w{i}" for i in range(30)]
    assert words_of(chunks[1])[:10] == [f"w{i}" for i in range(20, 30)]
    assert words_of(chunks[-1])[-1] == "w99"
    assert [c.index for c in chunks] == [0, 1, 2, 3, 4]


def test_every_word_is_in_some_chunk_in_order():
    text = numbered_words(1000)
    chunks = chunk_text(text)
    seen = []
    for chunk in chunks:
        for word in words_of(chunk):
            if not seen or int(word[1:]) > int(seen[-1][1:]):
                seen.append(word)
    assert seen == text.split()
    assert all(c.tokens <= 300 for c in chunks)


def test_defaults_are_300_tokens_with_50_overlap():
    chunks = chunk_text(numbered_words(600))
    assert chunks[0].tokens == 300
    assert words_of(chunks[1])[0] == "w250"


def test_no_overlap_gives_disjoint_chunks():
    chunks = chunk_text(numbered_words(20), size=5, overlap=0)
    assert [len(words_of(c)) for c in chunks] == [5] * 4
    assert sum((words_of(c) for c in chunks), []) == numbered_words(20).split()


def test_boundaries_fall_between_words_only():
    text = "Prices: 2-bedroom flat, 1,200 EUR/month; deposit three months. " * 20
    words = set(text.split())
    for chunk in chunk_text(text, size=17, overlap=5):
        assert set(words_of(chunk)) <= words
        assert chunk.tokens <= 17


def test_a_long_word_that_fits_a_chunk_is_kept_whole():
    url = "https://example.com/" + "/".join(["very-long-path"] * 20)
    chunks = chunk_text(f"see {url} now", size=200, overlap=2)
    assert any(url in c.text for c in chunks)
    assert words_of(chunks[-1])[-1] == "now"


def test_text_written_without_spaces_is_cut_into_chunks_of_the_usual_size():
    thai = "ราคาห้องพักรวมอาหารเช้าและภาษีแล้ว" * 600  # 20,000 characters, not one space
    japanese = "家賃は毎月一日に払います。" * 1600
    for text in (thai, japanese):
        chunks = chunk_text(text, size=300, overlap=50)
        assert len(chunks) > 20 and max(c.tokens for c in chunks) <= 300
        assert max(len(c.text) for c in chunks) <= 400  # not one 20,000-character chunk
        assert chunks[0].text == text[:len(chunks[0].text)] and text.endswith(chunks[-1].text)


def test_chunk_keeps_line_breaks_of_the_source():
    chunks = chunk_text("Line one\nLine two\n\nLine three", size=100)
    assert chunks[0].text == "Line one\nLine two\n\nLine three"


def test_page_numbers_are_kept_and_a_chunk_spanning_pages_names_both():
    pages = [(1, numbered_words(8)), (2, numbered_words(8, start=8)), (3, numbered_words(8, start=16))]
    chunks = chunk_text(pages, size=10, overlap=0)
    assert [(c.page_start, c.page_end) for c in chunks] == [(1, 2), (2, 3), (3, 3)]
    assert chunks[0].text == numbered_words(8) + "\n\n" + "w8 w9"


def test_plain_text_has_no_page_numbers():
    assert (chunk_text("a b c")[0].page_start, chunk_text("a b c")[0].page_end) == (None, None)


def test_empty_text_gives_no_chunks():
    assert chunk_text("   \n ") == []
    assert chunk_text([(1, ""), (2, " ")]) == []


@pytest.mark.parametrize("size,overlap", [(0, 0), (10, 10), (10, -1)])
def test_nonsense_sizes_are_refused(size, overlap):
    with pytest.raises(ValueError):
        chunk_text("a b c", size=size, overlap=overlap)


def _chunks(*texts: str) -> list[Chunk]:
    return [Chunk(index=i, text=t, tokens=count_tokens(t)) for i, t in enumerate(texts)]


def _index() -> VectorIndex:
    index = VectorIndex()
    index.add("prices.pdf", _chunks("rent", "deposit"), [[1, 0, 0, 0], [0, 1, 0, 0]])
    index.add("rules.pdf", _chunks("pets", "parking"), [[0, 0, 1, 0], [0, 0, 0.6, 0.8]])
    return index


def test_search_returns_the_nearest_chunk():
    hits = _index().search([0.1, 0.9, 0.05, 0], k=1)
    assert [(h.doc_id, h.chunk.text) for h in hits] == [("prices.pdf", "deposit")]


def test_scores_are_cosine_whatever_the_vector_lengths():
    index = VectorIndex()
    index.add("d", _chunks("long"), [[30.0, 40.0]])
    assert index.search([3.0, 4.0])[0].score == pytest.approx(1.0)
    assert index.search([-4.0, 3.0])[0].score == pytest.approx(0.0, abs=1e-6)


def test_top_k_is_ordered_best_first_with_exact_scores():
    hits = _index().search([0.1, 0.0, 0.8, 0.6], k=3)
    assert [h.chunk.text for h in hits] == ["parking", "pets", "rent"]
    query = np.array([0.1, 0.0, 0.8, 0.6]) / np.linalg.norm([0.1, 0.0, 0.8, 0.6])
    assert [h.score for h in hits] == pytest.approx([query @ [0, 0, 0.6, 0.8], query @ [0, 0, 1, 0],
                                                     query @ [1, 0, 0, 0]], abs=1e-6)


@pytest.mark.parametrize("k", [1, 10, 100, 300])  # large k: argpartition leaves its picks unsorted
def test_top_k_matches_a_full_sort_on_random_vectors(k):
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(500, 32))
    index = VectorIndex()
    index.add("big", _chunks(*[f"c{i}" for i in range(500)]), vectors)
    query = rng.normal(size=32)
    normed = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = [f"c{i}" for i in np.argsort(-(normed @ (query / np.linalg.norm(query))))[:k]]
    assert [h.chunk.text for h in index.search(query, k=k)] == expected


def test_k_larger_than_the_index_returns_everything():
    assert len(_index().search([1, 1, 1, 1], k=50)) == 4


def test_remove_makes_a_document_unretrievable():
    index = _index()
    assert index.remove("prices.pdf") == 2
    hits = index.search([0, 1, 0, 0], k=5)
    assert {h.doc_id for h in hits} == {"rules.pdf"} and len(index) == 2
    assert index.remove("prices.pdf") == 0


def test_re_adding_a_document_replaces_its_chunks():
    index = _index()
    index.add("prices.pdf", _chunks("rent 2026"), [[1, 0, 0, 0]])
    assert len(index) == 3
    assert [h.chunk.text for h in index.search([0, 1, 0, 0], k=4) if h.doc_id == "prices.pdf"] == ["rent 2026"]
    assert index.doc_ids == ["rules.pdf", "prices.pdf"]


def test_re_adding_a_document_with_no_chunks_removes_it():
    index = _index()
    index.add("prices.pdf", [], np.zeros((0, 4)))
    assert index.doc_ids == ["rules.pdf"]


def test_vectors_are_stored_as_unit_float32_rows():
    index = _index()
    assert index._matrix.dtype == np.float32
    assert np.allclose(np.linalg.norm(index._matrix, axis=1), 1.0)


def test_zero_query_or_empty_index_finds_nothing():
    assert _index().search([0, 0, 0, 0]) == []
    assert VectorIndex().search([1.0, 0.0]) == []


def test_mismatched_dimensions_and_counts_are_refused():
    index = _index()
    with pytest.raises(ValueError):
        index.add("x", _chunks("a"), [[1, 0, 0]])
    with pytest.raises(ValueError):
        index.add("x", _chunks("a", "b"), [[1, 0, 0, 0]])
    with pytest.raises(ValueError):
        index.search([1, 0, 0])
    with pytest.raises(ValueError):
        index.add("x", _chunks("a"), [[0, 0, 0, 0]])
    assert index.doc_ids == ["prices.pdf", "rules.pdf"]


def test_packed_vectors_come_back_as_the_same_float32_matrix_and_old_json_lists_still_read():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((4, 1536)).tolist()
    packed = packed_vectors(vectors)
    assert packed["dim"] == 1536 and len(packed["vectors_f32"]) < len(str(vectors)) / 3
    assert np.array_equal(unpacked_vectors(packed), np.asarray(vectors, dtype=np.float32))
    assert np.array_equal(unpacked_vectors({"vectors": vectors}), np.asarray(vectors, dtype=np.float32))
    assert unpacked_vectors(packed_vectors([])).shape[0] == 0 and unpacked_vectors({"vectors": []}).shape[0] == 0
