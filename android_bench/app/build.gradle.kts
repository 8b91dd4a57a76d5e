plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

// LiteRT (formerly TensorFlow Lite) from Google Maven. The 1.x line keeps the Interpreter API with
// the GPU and NNAPI delegates that this app selects by intent extra; check
// https://ai.google.dev/edge/litert/android for the current release before building.
val litertVersion = "1.4.0"

android {
    namespace = "org.tfmobile.bench"
    compileSdk = 34

    defaultConfig {
        applicationId = "org.tfmobile.bench"
        minSdk = 24
        targetSdk = 34
        versionCode = 1
        versionName = "0.1.0"
        buildConfigField("String", "LITERT_VERSION", "\"$litertVersion\"")
        ndk {
            abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64")
        }
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            // A benchmark tool, not a store app: sign the release build with the debug key so that
            // `./gradlew assembleRelease` gives an installable APK without a keystore.
            signingConfig = signingConfigs.getByName("debug")
        }
    }
    buildFeatures {
        buildConfig = true
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
    // .tflite files pushed at run time; never compress models if some are bundled as assets.
    androidResources {
        noCompress += "tflite"
    }
}

dependencies {
    implementation("com.google.ai.edge.litert:litert:$litertVersion")
    implementation("com.google.ai.edge.litert:litert-gpu:$litertVersion")
}
