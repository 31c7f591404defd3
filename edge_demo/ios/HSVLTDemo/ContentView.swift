import AVFoundation
import SwiftUI

/// Camera preview with the detected labels, their scores, a marker where each label was found (models exported
/// with --attention-stage) and the inference latency.
struct ContentView: View {
    @StateObject private var camera = CameraModel()

    var body: some View {
        ZStack(alignment: .topLeading) {
            CameraPreview(session: camera.session)
                .ignoresSafeArea()
            GeometryReader { geometry in
                ForEach(camera.detections.filter { $0.location != nil }) { detection in
                    let point = detection.location!
                    Circle()
                        .stroke(Color.yellow, lineWidth: 2)
                        .frame(width: 24, height: 24)
                        .position(x: point.x * geometry.size.width, y: point.y * geometry.size.height)
                }
            }
            .ignoresSafeArea()
            VStack(alignment: .leading, spacing: 4) {
                ForEach(camera.detections) { detection in
                    Text("\(detection.label)  \(detection.score, specifier: "%.2f")")
                }
                if camera.detections.isEmpty {
                    Text(camera.status == "running" ? "(no label)" : camera.status)
                }
                Text("\(camera.latencyMilliseconds, specifier: "%.1f") ms").font(.caption)
            }
            .font(.system(.body, design: .monospaced))
            .padding(8)
            .background(.black.opacity(0.6))
            .foregroundColor(.white)
            .cornerRadius(8)
            .padding()
        }
        .onAppear { camera.start() }
        .onDisappear { camera.stop() }
    }
}

/// AVCaptureVideoPreviewLayer in SwiftUI. The preview fills the screen without cropping (the model, too, sees
/// the whole frame), so marker positions line up with the picture.
struct CameraPreview: UIViewRepresentable {
    let session: AVCaptureSession

    final class PreviewView: UIView {
        override class var layerClass: AnyClass { AVCaptureVideoPreviewLayer.self }
        var previewLayer: AVCaptureVideoPreviewLayer { layer as! AVCaptureVideoPreviewLayer }
    }

    func makeUIView(context: Context) -> PreviewView {
        let view = PreviewView()
        view.previewLayer.session = session
        view.previewLayer.videoGravity = .resize
        return view
    }

    func updateUIView(_ uiView: PreviewView, context: Context) {}
}
