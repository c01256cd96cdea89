"""Object detection pieces shared by the detection task: box maths, target assignment, YOLO loss, decoding and NMS."""
