// Top-level build file. Plugin versions are pinned here; see README.md for the toolchain it was written for.
plugins {
    id("com.android.application") version "8.5.2" apply false
    id("org.jetbrains.kotlin.android") version "1.9.24" apply false
}
