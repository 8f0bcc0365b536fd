"""WebDataset pipelines, collation, multi-task mixing, the LightningDataModule.

A batch is a dict for **one task** (all samples of one catalogue task)::

    task            str
    lang            list[str]                 per sample
    keys            list[str]                 shard ``__key__`` per sample
    input_ids       LongTensor (B, T)         padded to the longest in the batch (multiple of 8)
    attention_mask  LongTensor (B, T)
    pixel_values    ByteTensor (B, C, H, W)   image_text; (B, 2, C, H, W) image_pair; absent for text.
                    uint8, resized and cropped by the timm data config; the core normalises it on the
                    device (4x less to send from workers). Float input (already normalised) works too.
    skipped         dict[str, int]            training only: corrupt samples skipped since the last batch

plus the family's targets (``labels`` (B,) for classification / image_pair / multiple_choice, ...), see
``datamodules.collate``.
"""
