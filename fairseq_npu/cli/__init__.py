"""Command-line tools of the plugin: fairseq-npu-evaluate and fairseq-npu-predict."""
