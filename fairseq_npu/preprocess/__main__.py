"""``python -m fairseq_npu.preprocess GLUE_DIR TASK ...``: same as the fairseq-npu-preprocess-glue console script."""

from fairseq_npu.preprocess.glue import cli_main

if __name__ == "__main__":
    cli_main()
