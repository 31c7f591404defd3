import SwiftUI

@main
struct HSVLTDemoApp: App {
    var body: some Scene {
        WindowGroup {
            ContentView()
        }
    }
}
