"""The standalone on-device script, `edgecnn_infer.py`: one file with only numpy and a TFLite runtime, on the
ground floor because training, export and bench import its preprocessing, quantization and row keys. This
folder holds nothing else, so running the script from here shadows no standard module."""
