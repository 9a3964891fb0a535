"""Word segmenters to pass as ``Tokenizer(..., pre_tokenize=...)``."""


def jieba_pre_tokenize(text):
    """Split Chinese text into words with jieba, without its HMM (WoBERT's choice).

    Without the HMM jieba only returns dictionary words and single characters, so
    the segmentation is deterministic and never invents new words. jieba is
    imported on first use (loading its dictionary takes about a second).

    >>> jieba_pre_tokenize("我爱北京天安门")
    ['我', '爱', '北京', '天安门']
    """
    import jieba

    return jieba.lcut(text, HMM=False)
