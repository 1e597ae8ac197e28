"""Evidence providers: one module per source, each gathered by ``collect_evidence``."""
