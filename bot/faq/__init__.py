"""FAQ brain: normalize → jieba tokens → synonym expansion → BM25 → decide."""
