"""The model in a web page: `python edge_demo/web.py --model model.onnx` (also `hsvlt demo --web`).

    python edge_demo/web.py --model model.onnx                   # http://127.0.0.1:8000/, photo or camera
    python edge_demo/web.py --model model.onnx --port 0          # any free port

The server and the page are hsvlt.deploy.web (its --help explains every flag); onnxruntime-web comes from
`npm ci` in this repository.
"""

from hsvlt.deploy.web import main

if __name__ == "__main__":
    main()
