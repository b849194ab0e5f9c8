# The Debian package (issue 16): `cpack -G DEB` in a release build directory
# (scripts/package.sh does both) makes parley_VERSION_ARCH.deb with
#   /usr/bin/parleyd
#   /lib/systemd/system/parleyd.service
#   /etc/parley/parleyd.conf                  (a conffile)
#   /usr/share/doc/parley/{README.md,copyright}
# and maintainer scripts (packaging/debian/) that make the `parley` system
# user and /var/lib/parley (0700), and enable and start the service where
# systemd runs. Included from CMakeLists.txt.

install(TARGETS parleyd RUNTIME DESTINATION bin)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/parleyd.service
        DESTINATION /lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/parleyd.conf DESTINATION /etc/parley)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/packaging/copyright
        DESTINATION share/doc/parley)

# A Debian version from git describe (PARLEY_VERSION): a tag vX.Y[-N-gHASH]
# gives X.Y[+N.gHASH]; without a tag, 0.0~gitN.HASH, N the commits up to
# HEAD, so that a later build sorts later; a dirty tree adds +dirty.
set(_v "${PARLEY_VERSION}")
set(_dirty "")
if(_v MATCHES "-dirty$")
  string(REGEX REPLACE "-dirty$" "" _v "${_v}")
  set(_dirty "+dirty")
endif()
if(_v MATCHES "^v?([0-9]+(\\.[0-9A-Za-z]+)+)(-([0-9]+)-g([0-9a-f]+))?$")
  set(PARLEY_DEB_VERSION "${CMAKE_MATCH_1}")
  if(CMAKE_MATCH_3)
    string(APPEND PARLEY_DEB_VERSION "+${CMAKE_MATCH_4}.g${CMAKE_MATCH_5}")
  endif()
else()
  execute_process(COMMAND git -C ${CMAKE_SOURCE_DIR} rev-list --count HEAD
                  OUTPUT_VARIABLE _n OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_QUIET RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0 OR _n STREQUAL "")
    set(_n 0)
  endif()
  string(REGEX REPLACE "[^0-9A-Za-z.+~]" "" _h "${_v}")
  set(PARLEY_DEB_VERSION "0.0~git${_n}.${_h}")
endif()
string(APPEND PARLEY_DEB_VERSION "${_dirty}")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME parley)
set(CPACK_PACKAGE_VERSION "${PARLEY_DEB_VERSION}")
set(CPACK_PACKAGE_CONTACT "parley engineers <eng@parley.dev>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "real-time team-messaging server")
set(CPACK_PACKAGE_DESCRIPTION "parleyd serves channels, direct messages, presence, search, files and push
notifications to WebSocket clients (msgpack), and the browser client over
HTTP. The package runs it as the systemd service parleyd, as the system
user parley, with its data in /var/lib/parley and its settings in
/etc/parley/parleyd.conf.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# the libraries' packages, from dpkg-shlibdeps (dpkg-dev); adduser for postinst
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/debian/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/debian/postinst
    ${CMAKE_SOURCE_DIR}/packaging/debian/prerm
    ${CMAKE_SOURCE_DIR}/packaging/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
