import CoreML
import CoreVideo
import Foundation
import ImageIO
import Vision

/// The interface of an HSVLT Core ML model, as `export/to_coreml.py` writes it. This enum is the one place the
/// Swift code names inputs, outputs and metadata keys; `tests/edge_demo/test_ios_interface.py` parses it and
/// checks it against a freshly exported .mlpackage, so a change on either side fails the Python tests.
///
/// Shapes are symbolic: "C" is the number of labels, "S" the input size (metadata), a lowercase name is any
/// size (the attention map's height and width), a number is that number.
enum HSVLTInterface {
    static let imageInput = "image"
    static let imageShape = ["3", "S", "S"]
    static let probabilitiesOutput = "probabilities"
    static let probabilitiesShape = ["1", "C"]
    /// Present only in models exported with --attention-stage.
    static let attentionOutput = "attention"
    static let attentionShape = ["1", "C", "h", "w"]

    static let labelsKey = "labels"            // JSON array of label names
    static let thresholdsKey = "thresholds"    // JSON array of per-label thresholds, same order
    static let inputSizeKey = "input_size"     // side of the square input, in pixels
    static let presetKey = "preset"            // model preset, for display
}

/// One label found in an image.
struct Detection: Identifiable, Equatable {
    let label: String
    let score: Float
    /// Where the label's attention peaks, in normalised image coordinates (0...1, origin top left); nil when
    /// the model has no attention output.
    let location: CGPoint?
    var id: String { label }
}

enum HSVLTError: LocalizedError {
    case modelNotFound(String)
    case metadata(String)
    case interface(String)
    case noOutput

    var errorDescription: String? {
        switch self {
        case .modelNotFound(let name): return "\(name).mlmodelc is not in the app bundle (add the .mlpackage to the target)"
        case .metadata(let problem): return "model metadata: \(problem)"
        case .interface(let problem): return "model interface: \(problem)"
        case .noOutput: return "the model returned no probabilities"
        }
    }
}

/// Multi-label classification with an HSVLT Core ML model: labels, per-label thresholds and input size come from
/// the model's own metadata. Vision scales the whole frame to the model's square input (`.scaleFill`, no crop),
/// which is what the Python demo and the exporters' preprocessing (hsvlt.preprocess.prepare_image) do.
final class HSVLTClassifier {
    let labels: [String]
    let thresholds: [Float]
    let inputSize: Int
    let preset: String
    let hasAttention: Bool
    private let request: VNCoreMLRequest

    /// Loads `name`.mlmodelc from `bundle` (Xcode compiles an added .mlpackage into it).
    convenience init(modelNamed name: String = "HSVLT", in bundle: Bundle = .main,
                     configuration: MLModelConfiguration = MLModelConfiguration()) throws {
        guard let url = bundle.url(forResource: name, withExtension: "mlmodelc") else {
            throw HSVLTError.modelNotFound(name)
        }
        try self.init(model: MLModel(contentsOf: url, configuration: configuration))
    }

    init(model: MLModel) throws {
        let description = model.modelDescription
        let metadata = description.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String] ?? [:]
        let labels = try HSVLTClassifier.decode([String].self, metadata, HSVLTInterface.labelsKey)
        let thresholds = try HSVLTClassifier.decode([Float].self, metadata, HSVLTInterface.thresholdsKey)
        guard let sizeText = metadata[HSVLTInterface.inputSizeKey], let inputSize = Int(sizeText) else {
            throw HSVLTError.metadata("'\(HSVLTInterface.inputSizeKey)' missing or not a number")
        }
        guard thresholds.count == labels.count else {
            throw HSVLTError.metadata("\(labels.count) labels but \(thresholds.count) thresholds")
        }
        let sizes = ["C": labels.count, "S": inputSize]

        guard let image = description.inputDescriptionsByName[HSVLTInterface.imageInput]?.imageConstraint else {
            throw HSVLTError.interface("no image input '\(HSVLTInterface.imageInput)'")
        }
        try HSVLTClassifier.check(HSVLTInterface.imageInput, shape: [3, image.pixelsHigh, image.pixelsWide],
                                  against: HSVLTInterface.imageShape, sizes: sizes)
        let outputs = description.outputDescriptionsByName
        guard let probabilities = outputs[HSVLTInterface.probabilitiesOutput]?.multiArrayConstraint else {
            throw HSVLTError.interface("no output '\(HSVLTInterface.probabilitiesOutput)'")
        }
        try HSVLTClassifier.check(HSVLTInterface.probabilitiesOutput, shape: probabilities.shape.map(\.intValue),
                                  against: HSVLTInterface.probabilitiesShape, sizes: sizes)
        let attention = outputs[HSVLTInterface.attentionOutput]?.multiArrayConstraint
        if let attention {
            try HSVLTClassifier.check(HSVLTInterface.attentionOutput, shape: attention.shape.map(\.intValue),
                                      against: HSVLTInterface.attentionShape, sizes: sizes)
        }

        let request = VNCoreMLRequest(model: try VNCoreMLModel(for: model))
        request.imageCropAndScaleOption = .scaleFill
        self.labels = labels
        self.thresholds = thresholds
        self.inputSize = inputSize
        self.preset = metadata[HSVLTInterface.presetKey] ?? "?"
        self.hasAttention = attention != nil
        self.request = request
    }

    /// Labels whose probability reaches their threshold, highest first. `orientation` is how the buffer is
    /// rotated relative to upright (the back camera in portrait delivers `.right`).
    func classify(_ pixelBuffer: CVPixelBuffer, orientation: CGImagePropertyOrientation = .up) throws -> [Detection] {
        let handler = VNImageRequestHandler(cvPixelBuffer: pixelBuffer, orientation: orientation)
        try handler.perform([request])
        let observations = request.results as? [VNCoreMLFeatureValueObservation] ?? []
        func output(_ name: String) -> MLMultiArray? {
            observations.first { $0.featureName == name }?.featureValue.multiArrayValue
        }
        guard let probabilities = output(HSVLTInterface.probabilitiesOutput) else { throw HSVLTError.noOutput }
        let attention = hasAttention ? output(HSVLTInterface.attentionOutput) : nil
        return labels.indices
            .map { index in (index, probabilities[index].floatValue) }
            .filter { index, score in score >= thresholds[index] }
            .sorted { $0.1 > $1.1 }
            .map { index, score in
                Detection(label: labels[index], score: score, location: attention.map { peak(of: index, in: $0) })
            }
    }

    /// Centre of the strongest cell of label `index`'s attention map (1 x C x h x w), normalised to 0...1.
    private func peak(of index: Int, in attention: MLMultiArray) -> CGPoint {
        let height = attention.shape[2].intValue, width = attention.shape[3].intValue
        var best = (value: -Float.infinity, row: 0, column: 0)
        for row in 0..<height {
            for column in 0..<width {
                let value = attention[[0, index, row, column].map { NSNumber(value: $0) }].floatValue
                if value > best.value { best = (value, row, column) }
            }
        }
        return CGPoint(x: (Double(best.column) + 0.5) / Double(width), y: (Double(best.row) + 0.5) / Double(height))
    }

    private static func decode<T: Decodable>(_ type: T.Type, _ metadata: [String: String], _ key: String) throws -> T {
        guard let text = metadata[key], let data = text.data(using: .utf8) else {
            throw HSVLTError.metadata("'\(key)' missing (export with export/to_coreml.py)")
        }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            throw HSVLTError.metadata("'\(key)' is not a JSON \(type)")
        }
    }

    /// `shape` against a symbolic shape of HSVLTInterface: numbers must match, "C" and "S" are `sizes`, a
    /// lowercase symbol takes any positive size.
    private static func check(_ name: String, shape: [Int], against expected: [String], sizes: [String: Int]) throws {
        let matches = shape.count == expected.count && zip(shape, expected).allSatisfy { size, symbol in
            if let number = Int(symbol) ?? sizes[symbol] { return size == number }
            return size > 0
        }
        if !matches {
            throw HSVLTError.interface("'\(name)' has shape \(shape), expected \(expected) with \(sizes)")
        }
    }
}
