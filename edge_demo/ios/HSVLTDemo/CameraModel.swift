import AVFoundation
import Foundation

/// The back camera, each frame classified by HSVLTClassifier on a background queue; the latest detections are
/// published for SwiftUI. Frames that arrive while one is being classified are dropped (the camera never waits).
final class CameraModel: NSObject, ObservableObject, AVCaptureVideoDataOutputSampleBufferDelegate {
    @Published private(set) var detections: [Detection] = []
    @Published private(set) var latencyMilliseconds: Double = 0
    @Published private(set) var status: String = "starting"

    let session = AVCaptureSession()
    private let classifier: HSVLTClassifier?
    private let queue = DispatchQueue(label: "hsvlt.camera")

    override init() {
        do {
            classifier = try HSVLTClassifier()
        } catch {
            classifier = nil
            status = error.localizedDescription
        }
        super.init()
    }

    func start() {
        guard classifier != nil else { return }
        AVCaptureDevice.requestAccess(for: .video) { granted in
            guard granted else {
                DispatchQueue.main.async { self.status = "camera access denied (Settings > Privacy > Camera)" }
                return
            }
            self.queue.async { self.configureAndRun() }
        }
    }

    func stop() {
        queue.async { self.session.stopRunning() }
    }

    private func configureAndRun() {
        guard let camera = AVCaptureDevice.default(.builtInWideAngleCamera, for: .video, position: .back),
              let input = try? AVCaptureDeviceInput(device: camera) else {
            DispatchQueue.main.async { self.status = "no camera" }
            return
        }
        session.beginConfiguration()
        session.sessionPreset = .vga640x480
        let output = AVCaptureVideoDataOutput()
        output.alwaysDiscardsLateVideoFrames = true
        output.videoSettings = [kCVPixelBufferPixelFormatTypeKey as String: kCVPixelFormatType_32BGRA]
        output.setSampleBufferDelegate(self, queue: queue)
        if session.canAddInput(input) { session.addInput(input) }
        if session.canAddOutput(output) { session.addOutput(output) }
        session.commitConfiguration()
        session.startRunning()
        DispatchQueue.main.async { self.status = "running" }
    }

    func captureOutput(_ output: AVCaptureOutput, didOutput sampleBuffer: CMSampleBuffer,
                       from connection: AVCaptureConnection) {
        guard let classifier, let pixelBuffer = CMSampleBufferGetImageBuffer(sampleBuffer) else { return }
        let start = CFAbsoluteTimeGetCurrent()
        // The back camera's buffers are landscape; in portrait the upright image is the buffer turned right.
        let detections = (try? classifier.classify(pixelBuffer, orientation: .right)) ?? []
        let milliseconds = (CFAbsoluteTimeGetCurrent() - start) * 1000
        DispatchQueue.main.async {
            self.detections = detections
            self.latencyMilliseconds = milliseconds
        }
    }
}
