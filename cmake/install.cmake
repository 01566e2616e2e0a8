# install.cmake -- install rules, the CMake package and the pkg-config files.
#
# Included by the root CMakeLists.txt after the autodiff (and nn) targets
# exist. Installs:
#   include/autodiff/*.h, include/nn/*.h        public headers
#   lib/libautodiff.so.X.Y.Z (+ SONAME links), lib/libautodiff.a, same for nn
#   lib/cmake/autodiff/autodiffConfig*.cmake    find_package(autodiff CONFIG)
#   lib/pkgconfig/autodiff.pc, nn.pc            pkg-config
# Imported targets: autodiff::autodiff, autodiff::autodiff_static and, when
# nn is built, autodiff::nn, autodiff::nn_static (component "nn").

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

get_filename_component(AD_ROOT_DIR "${CMAKE_CURRENT_LIST_DIR}" DIRECTORY)

# A project that add_subdirectory()s this one usually ships its own
# binaries; it can still turn installation on.
if(DEFINED PROJECT_IS_TOP_LEVEL)
  set(ad_install_default ${PROJECT_IS_TOP_LEVEL})
elseif(CMAKE_SOURCE_DIR STREQUAL AD_ROOT_DIR)
  set(ad_install_default ON)
else()
  set(ad_install_default OFF)
endif()
option(AD_INSTALL "Generate install rules for autodiff (and nn)" ${ad_install_default})

set(AD_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/autodiff")
set(AD_PC_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig")

# ---- usage requirements shared by the build tree and the package ----

# Static consumers: AD_API must not mean dllimport (Windows); on ELF it is
# harmless either way.
target_compile_definitions(autodiff_static INTERFACE AD_STATIC_DEFINE)
set_target_properties(autodiff PROPERTIES EXPORT_NAME autodiff)
set_target_properties(autodiff_static PROPERTIES EXPORT_NAME autodiff_static)
set(ad_export_targets autodiff autodiff_static)

if(TARGET nn)
  # The same versioning as libautodiff unless nn/ set its own.
  get_target_property(ad_nn_soversion nn SOVERSION)
  if(NOT ad_nn_soversion)
    set_target_properties(nn PROPERTIES
      VERSION ${PROJECT_VERSION}
      SOVERSION ${PROJECT_VERSION_MAJOR})
  endif()
  set_target_properties(nn PROPERTIES EXPORT_NAME nn)
  # Run-time search path of the installed libnn: its own directory, where
  # libautodiff.so.1 is installed too. A program that calls only nn_
  # functions and is linked with --as-needed (the default of several
  # toolchains, Debian's gcc included) has no NEEDED entry for
  # libautodiff, so the loader looks for it on libnn's behalf, and an
  # executable's DT_RUNPATH is not searched for a library's dependencies.
  # $ORIGIN makes the pair self-contained in any prefix, moved or not.
  # (The build-tree libnn has CMake's build RPATH, which names the
  # directory of the build-tree libautodiff.)
  if(APPLE)
    set(ad_origin "@loader_path")
  else()
    set(ad_origin "$ORIGIN")
  endif()
  get_target_property(ad_nn_install_rpath nn INSTALL_RPATH)
  if(NOT ad_nn_install_rpath)
    set(ad_nn_install_rpath "")
  endif()
  if(NOT ad_origin IN_LIST ad_nn_install_rpath)
    list(PREPEND ad_nn_install_rpath "${ad_origin}")
  endif()
  set_target_properties(nn PROPERTIES INSTALL_RPATH "${ad_nn_install_rpath}")
  list(APPEND ad_export_targets nn)
  if(NOT TARGET autodiff::nn)
    add_library(autodiff::nn ALIAS nn)
  endif()
endif()
if(TARGET nn_static)
  get_target_property(ad_nn_static_name nn_static OUTPUT_NAME)
  if(NOT ad_nn_static_name)
    set_target_properties(nn_static PROPERTIES OUTPUT_NAME nn)
  endif()
  target_compile_definitions(nn_static INTERFACE NN_STATIC_DEFINE)
  set_target_properties(nn_static PROPERTIES EXPORT_NAME nn_static)
  list(APPEND ad_export_targets nn_static)
  if(NOT TARGET autodiff::nn_static)
    add_library(autodiff::nn_static ALIAS nn_static)
  endif()
endif()

if(NOT AD_INSTALL)
  return()
endif()

# ---- headers ----

install(DIRECTORY "${AD_ROOT_DIR}/autodiff/include/autodiff"
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  COMPONENT autodiff_dev
  FILES_MATCHING PATTERN "*.h")
if(TARGET nn AND EXISTS "${AD_ROOT_DIR}/nn/include/nn")
  install(DIRECTORY "${AD_ROOT_DIR}/nn/include/nn"
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
    COMPONENT autodiff_dev
    FILES_MATCHING PATTERN "*.h")
endif()

# ---- libraries and the exported targets ----

install(TARGETS ${ad_export_targets}
  EXPORT autodiffTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
    COMPONENT autodiff_runtime NAMELINK_COMPONENT autodiff_dev
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT autodiff_dev
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT autodiff_runtime)

install(EXPORT autodiffTargets
  NAMESPACE autodiff::
  DESTINATION ${AD_CMAKE_DIR}
  COMPONENT autodiff_dev)

# ---- CMake package: autodiffConfig.cmake + autodiffConfigVersion.cmake ----

if(TARGET nn)
  set(AD_PACKAGE_HAS_NN 1)
else()
  set(AD_PACKAGE_HAS_NN 0)
endif()
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/autodiffConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/autodiffConfig.cmake"
  INSTALL_DESTINATION ${AD_CMAKE_DIR}
  NO_SET_AND_CHECK_MACRO)
# The SONAME carries the major version, so the package promises the same.
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/autodiffConfigVersion.cmake"
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/autodiffConfig.cmake"
  "${PROJECT_BINARY_DIR}/autodiffConfigVersion.cmake"
  "${CMAKE_CURRENT_LIST_DIR}/autodiffCodegen.cmake"
  DESTINATION ${AD_CMAKE_DIR}
  COMPONENT autodiff_dev)

# ---- pkg-config ----
#
# The prefix is only known at install time (cmake --install --prefix), so
# the .pc files are made in two steps: the configure step fills in
# everything but @AD_PC_PREFIX@, the install step fills that in.

function(ad_pc_dir out var)
  if(IS_ABSOLUTE "${${var}}")
    set(${out} "${${var}}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${${var}}" PARENT_SCOPE)
  endif()
endfunction()
ad_pc_dir(AD_PC_LIBDIR CMAKE_INSTALL_LIBDIR)
ad_pc_dir(AD_PC_INCLUDEDIR CMAKE_INSTALL_INCLUDEDIR)
set(AD_PC_PREFIX "@AD_PC_PREFIX@") # kept for the install step

set(ad_pc_files autodiff)
if(TARGET nn)
  list(APPEND ad_pc_files nn)
endif()
foreach(pc ${ad_pc_files})
  configure_file("${CMAKE_CURRENT_LIST_DIR}/${pc}.pc.in"
    "${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.stage" @ONLY)
  install(CODE "
    set(AD_PC_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
    configure_file(\"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc.stage\"
      \"${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc\" @ONLY)
    " COMPONENT autodiff_dev)
  install(FILES "${PROJECT_BINARY_DIR}/pkgconfig/${pc}.pc"
    DESTINATION ${AD_PC_DIR}
    COMPONENT autodiff_dev)
endforeach()
