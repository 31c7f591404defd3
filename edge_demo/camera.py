"""Live multi-label detection: `python edge_demo/camera.py --model model.pte`.

    python edge_demo/camera.py --model model_int8.pte                        # camera 0, window (q or Esc quits)
    python edge_demo/camera.py --model model.onnx --source clip.mp4          # a video file
    python edge_demo/camera.py --model best.pt --source photos/ --headless   # a folder of images, no window
    python edge_demo/camera.py --model model.pte --source shapes --max-frames 300 --headless

The demo is hsvlt.deploy.camera (--help explains every flag).
"""

from hsvlt.deploy.camera import main

if __name__ == "__main__":
    main()
